"""Digit strings: reverse (or sort) a random string of digits, a long answer checked exactly.

Row: {"question": "reverse 80215=", "ground_truth_answer": "51208", "solution": "\\boxed{51208}"}.
Every answer digit follows from the prompt alone, not from the answer digits before it, so a model
can commit many of them in one pass: with 8-16 digits the response (box and EOS included) is
17-25 tokens, long enough for a larger block to make more tokens per forward
(README "Block-size adaptation"), where arith's short answers leave little to parallelise."""
from __future__ import annotations

import random
from typing import Literal

from rewards.extract import extract_boxed
from rewards.result import RewardResult

from ..schemas import Row

Op = Literal["reverse", "sort"]
_APPLY = {"reverse": lambda s: s[::-1], "sort": lambda s: "".join(sorted(s))}


def sample_digits(rng: random.Random, min_len: int = 8, max_len: int = 16, op: Op = "reverse") -> Row:
    """A string of uniform length in [min_len, max_len], each digit uniform in 0-9."""
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    if op not in _APPLY:
        raise ValueError(f"op must be one of {sorted(_APPLY)}, got {op!r}")
    s = "".join(rng.choice("0123456789") for _ in range(rng.randint(min_len, max_len)))
    answer = _APPLY[op](s)
    return {"question": f"{op} {s}=", "ground_truth_answer": answer, "solution": f"\\boxed{{{answer}}}"}


def generate_digits(n: int, seed: int, min_len: int = 8, max_len: int = 16, op: Op = "reverse") -> list[Row]:
    rng = random.Random(seed)
    return [sample_digits(rng, min_len, max_len, op) for _ in range(n)]


def reward(response: str, row: Row) -> dict:
    """1 if the last \\boxed{} holds exactly the answer's digit string (leading zeros count).
    info.digit_accuracy: the fraction of the answer's places holding the right digit."""
    answer = extract_boxed(response)
    if answer is None:
        return RewardResult.failure("no_answer", digit_accuracy=0.0).as_dict()
    truth = row["ground_truth_answer"]
    info = {"answer": answer[:100], "digit_accuracy": sum(a == t for a, t in zip(answer, truth)) / len(truth)}
    if not answer.isascii() or not answer.isdigit():
        return RewardResult.failure("not_digits", **info).as_dict()
    return RewardResult(float(answer == truth), answer == truth, info).as_dict()
