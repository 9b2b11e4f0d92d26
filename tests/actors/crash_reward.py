"""A reward that kills its own worker process once (the first call whose row names a marker file
that does not exist yet), so a reward worker dies mid-chunk deterministically."""
import os


def reward(response: str, row: dict) -> dict:
    marker = row.get("crash_marker")
    if marker and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    score = sum(c.isdigit() for c in response) / max(len(response), 1)
    return {"reward": score, "correct": score > 0.5, "info": {}}
