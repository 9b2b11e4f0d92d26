"""Rewards that never reach a verdict: one raises (a checker that is down), one returns NaN."""


def raises(response: str, row: dict) -> dict:
    raise ConnectionError("the answer checker service is down")


def nan(response: str, row: dict) -> float:
    return float("nan")
