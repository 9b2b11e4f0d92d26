"""Multiple-choice reward: find the option letter a response chose and compare it with the row's letter.

What counts as a choice, in order: the letters its last explicit answer statement names ("answer is X",
"Answer: X", "the correct choice is X", \\boxed{X}, <answer>X</answer>); else its standalone option
letters ("B", "(B)", "B.", "B)", "**B**", "option B") if they all name one option. "A" or "I" used as
an English word ("A careful look", "I think") is no letter. A response naming none is incorrect
("no_answer"); one whose last statement names different options ("the answer is A or B"), or that
names several without stating its answer, is incorrect ("ambiguous"); a row whose ground truth is not one of
its option letters has no verdict ("bad_ground_truth"), so a broken row is counted, never trained as "wrong"."""
from __future__ import annotations

import re
from typing import Any

from .result import RewardResult

DEFAULT_CHOICES = "ABCD"
# A letter on its own: not inside a word ("BAD"), a number ("B12") or a contraction ("I'm").
_LETTER = r"([A-Za-z])(?![A-Za-z0-9]|'[a-z])"
# Markdown, dollars, brackets and \text{ around a letter: "**(B)**", "$\text{B}$". No two parts
# match the same character: a long run of spaces must not make the match quadratic.
_DECOR = r"[\s*_$(\[{]*(?:\\(?:text|textbf|mathrm)\{[\s(\[]*)?(?:(?:option|choice)\s+)?"
_STATED = re.compile(r"(?:\b(?:answer|choice|option)[*_]*\s*(?:is\b(?:\s*:)?|:)|\\boxed\s*\{|<answer>)"
                     + _DECOR + _LETTER, re.IGNORECASE)
# Further options joined to a stated one: "the answer is A or B", "Answer: A, C".
_ALSO = re.compile(r"[\s*_$)\]}]*(?:,|/|&|\bor\b|\band\b)" + _DECOR + _LETTER, re.IGNORECASE)
_STANDALONE = re.compile(r"(?<![A-Za-z0-9])([A-Z])(?![A-Za-z0-9]|'[a-z])")
_NEXT_WORD = re.compile(r"[ \t]+([a-z]+)")


def _is_word(text: str, at: int) -> bool:
    """Whether text[at] is the article "a"/"A" or the pronoun "i"/"I" rather than an option letter."""
    letter = text[at]
    if letter not in "aAiI":
        return False
    following = _NEXT_WORD.match(text, at + 1)
    # "A.", "(A)", "A is correct", "A or B": no article or pronoun stands there.
    if following is None or following.group(1) in ("is", "or", "and"):
        return False
    if letter != "A":  # "a number", "I think"
        return True
    # Capital "A" before a word is the article where a sentence starts ("A careful look");
    # mid-sentence ("the answer is A because") it is the option.
    before = text[max(0, at - 40) : at].rstrip(" \t*_#>-")
    return not before or before[-1] in ".!?:\n"


def _stated(response: str, choices: str) -> set[str]:
    """The option letters named by the response's last answer statement that names one: a reasoning
    response may correct itself ("the answer is A. Wait, ... the answer is B")."""
    named: set[str] = set()
    for match in _STATED.finditer(response):
        end = match.end()
        letters = [match]
        while also := _ALSO.match(response, end):
            letters.append(also)
            end = also.end()
        these = {m.group(1).upper() for m in letters
                 if m.group(1).upper() in choices and not _is_word(response, m.start(1))}
        named = these or named
    return named


def extract_choice(response: str, choices: str = DEFAULT_CHOICES) -> tuple[str | None, str]:
    """(the chosen letter, how it was found): "stated", "standalone", or None with "no_answer" / "ambiguous"."""
    stated = _stated(response, choices)
    if stated:
        return (stated.pop(), "stated") if len(stated) == 1 else (None, "ambiguous")
    letters = {m.group(1) for m in _STANDALONE.finditer(response)
               if m.group(1) in choices and not _is_word(response, m.start(1))}
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
