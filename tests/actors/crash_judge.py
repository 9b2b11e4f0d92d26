"""A JudgeWorker whose process dies inside its first call (the first call whose rows name a marker
file that does not exist yet), so a judge worker is killed mid-step deterministically."""
import os

from actors.judge_worker import JudgeWorker


class CrashingJudge(JudgeWorker):
    def score(self, batch, which, task_rows, parts):
        marker = task_rows[0].get("crash_marker") if task_rows else None
        if marker and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return super().score(batch, which, task_rows, parts)
