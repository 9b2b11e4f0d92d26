"""A dense test reward: the fraction of digits in the response, so a random tiny model already
gets non-zero group advantages and every RL step really updates."""
import json
import zlib


def reward(response: str, row: dict) -> dict:
    score = sum(c.isdigit() for c in response) / max(len(response), 1)
    return {"reward": score, "correct": score > 0.5, "info": {}}


def any_digit(response: str, row: dict) -> dict:
    """Correct when the response holds a digit: a random tiny model gets some right and some wrong."""
    hit = any(c.isdigit() for c in response)
    return {"reward": float(hit), "correct": hit, "info": {}}


def away_from_digits(response: str, row: dict) -> dict:
    """Rewards digit-free responses but counts responses with a digit as correct: training moves the
    policy away from what the held-out accuracy counts, so that accuracy peaks early (keep_best)."""
    hit = any(c.isdigit() for c in response)
    return {"reward": float(not hit), "correct": hit, "info": {}}


def reward_or_error(response: str, row: dict) -> dict:
    """reward(), but the checker raises for about a quarter of the prompts (by a hash of the row, so
    the same ones every run, greedy or sampled): a run with reward failures of one kind, reward_error."""
    if zlib.crc32(json.dumps(row, sort_keys=True, default=str).encode()) % 4 == 0:
        raise RuntimeError("the checker is down for this prompt")
    return reward(response, row)
