"""Multiple-choice reward: find the option letter a response chose and compare it with the row's letter.

What counts as a choice, in order: an explicit "answer is X" / "Answer: X"; else the response's standalone
option letters ("B", "(B)", "B.", "B)") if they all name one option. A response naming none is
incorrect ("no_answer"), one naming several different options without saying which is its answer is
incorrect ("ambiguous"); a row whose ground truth is not one of its option letters has no verdict
("bad_ground_truth"), so a broken row is counted, never trained as "wrong"."""
from __future__ import annotations

import re
from typing import Any

from .result import RewardResult

DEFAULT_CHOICES = "ABCD"
_STATED = re.compile(r"answer\s*(?:is|:)\s*\(?([A-Z])\b", re.IGNORECASE)
_STANDALONE = re.compile(r"(?<![A-Za-z])\(?([A-Z])(?![A-Za-z])")


def extract_choice(response: str, choices: str = DEFAULT_CHOICES) -> tuple[str | None, str]:
    """(the chosen letter, how it was found): "stated", "standalone", or None with "no_answer" / "ambiguous"."""
    stated = [m.upper() for m in _STATED.findall(response) if m.upper() in choices]
    if stated:
        return stated[-1], "stated"
    letters = {m for m in _STANDALONE.findall(response) if m in choices}
    if len(letters) == 1:
        return letters.pop(), "standalone"
    return None, "ambiguous" if letters else "no_answer"


def choice_reward(response: str, row: dict[str, Any]) -> RewardResult:  # the registry coerces results
    """1.0 when the response's choice equals row["ground_truth_answer"] (options: row["choices"], default ABCD)."""
    choices = str(row.get("choices") or DEFAULT_CHOICES)
    truth = str(row.get("ground_truth_answer", "")).strip().rstrip(".").strip("()").upper()
    if len(truth) != 1 or truth not in choices:
        return RewardResult.unavailable("bad_ground_truth", ground_truth=row.get("ground_truth_answer"),
                                        choices=choices)
    chosen, how = extract_choice(response, choices)
    if chosen is None:
        return RewardResult.failure(how)
    if chosen != truth:
        return RewardResult.failure("wrong_choice", extracted=chosen, found=how)
    return RewardResult(1.0, True, {"extracted": chosen, "found": how})
