"""Rewards that do not always reach a verdict: one raises (a checker that is down), one returns
NaN, one hangs, raises, returns NaN or scores depending on the row."""


def raises(response: str, row: dict) -> dict:
    raise ConnectionError("the answer checker service is down")


def nan(response: str, row: dict) -> float:
    return float("nan")


def flaky(response: str, row: dict) -> dict:
    """By the row's `mode`: hang, raise, return NaN, or score honestly (a digit is correct)."""
    import time

    mode = row.get("mode", "ok")
    if mode == "hang":
        time.sleep(600)
    if mode == "raise":
        raise KeyError("judge_score")
    if mode == "nan":
        return {"reward": float("nan"), "correct": False}
    hit = any(c.isdigit() for c in response)
    return {"reward": float(hit), "correct": hit}


def hanging_process(prefixes: list[str], row: dict) -> list[float]:
    """A rule process reward that hangs on rows marked `mode: hang`, else scores every chunk 1."""
    import time

    if row.get("mode") == "hang":
        time.sleep(600)
    return [1.0] * len(prefixes)
