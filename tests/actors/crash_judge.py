"""A JudgeWorker whose process dies inside its first task (the first call whose rows name a marker
file that does not exist yet), so a judge worker is killed mid-step deterministically."""
import os

from actors.judge_worker import JudgeWorker


class CrashingJudge(JudgeWorker):
    def score(self, requests, outcome, chunk_tokens):
        marker = requests[0].row.get("crash_marker") if requests else None
        if marker and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return super().score(requests, outcome, chunk_tokens)
