"""Multi-digit arithmetic, the default task of the tiny-model learning proof.

Row: {"question": "47+85=", "ground_truth_answer": "132", "solution": "231 \\boxed{132}"}.
The "reversed" worked solution writes the answer's digits least-significant first, the order in
which column arithmetic produces them (each digit needs only the column and the carry already
written), then copies them into the box. That is the format small transformers learn addition
from fastest; "direct" is the bare box. 3-digit operands give responses of at most 17 chars."""
from __future__ import annotations

import random
import re
from typing import Literal, Sequence

from rewards.extract import extract_boxed
from rewards.result import RewardResult

from ..schemas import Row

Style = Literal["reversed", "direct"]
OPS = ("+", "-", "*")
_INTEGER = re.compile(r"[+-]?\d{1,64}")


def _operand(rng: random.Random, min_digits: int, max_digits: int) -> int:
    digits = rng.randint(min_digits, max_digits)
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def sample_arith(rng: random.Random, min_digits: int = 1, max_digits: int = 3,
                 ops: Sequence[str] = ("+", "-"), mul_max_digits: int = 1,
                 style: Style = "reversed") -> Row:
    """One problem; each operand has a uniform number of digits in [min_digits, max_digits]
    (the second operand of "*" at most mul_max_digits, so products stay short)."""
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"need 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
    if not ops or set(ops) - set(OPS):
        raise ValueError(f"ops must be a non-empty subset of {OPS}, got {ops}")
    if style not in ("reversed", "direct"):
        raise ValueError(f"style must be 'reversed' or 'direct', got {style!r}")
    op = rng.choice(list(ops))
    a = _operand(rng, min_digits, max_digits)
    b = _operand(rng, min_digits, min(max_digits, mul_max_digits) if op == "*" else max_digits)
    if op == "-" and a < b:
        a, b = b, a  # non-negative answers: no sign to learn
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    box = f"\\boxed{{{value}}}"
    return {"question": f"{a}{op}{b}=", "ground_truth_answer": str(value),
            "solution": f"{str(value)[::-1]} {box}" if style == "reversed" else box}


def generate_arith(n: int, seed: int, min_digits: int = 1, max_digits: int = 3,
                   ops: Sequence[str] = ("+", "-"), mul_max_digits: int = 1,
                   style: Style = "reversed") -> list[Row]:
    rng = random.Random(seed)
    return [sample_arith(rng, min_digits, max_digits, ops, mul_max_digits, style) for _ in range(n)]


def reward(response: str, row: Row) -> dict:
    """1 if the last \\boxed{} holds exactly the integer answer; text around it is ignored.
    An exact integer match, not math_verify: cheaper, and "132.0" is not what the task asks for."""
    answer = extract_boxed(response)
    if answer is None:
        return RewardResult.failure("no_answer").as_dict()
    if not _INTEGER.fullmatch(answer):
        return RewardResult.failure("not_an_integer", answer=answer[:100]).as_dict()
    correct = int(answer) == int(row["ground_truth_answer"])
    return RewardResult(float(correct), correct, {"answer": answer}).as_dict()


def process_reward(prefixes: list[str], row: Row) -> list[float]:
    """Rule-based process reward for the "reversed" worked answer: each prefix (ending at a chunk,
    see rewards/process.py) scores the digits of the leading digit run it newly wrote, +1 for a
    digit equal to the reversed answer's digit at that place and -1 otherwise (also past the
    answer's length), divided by the answer's length. A fully right worked answer sums to 1 over
    the response whatever the chunking; text after the digit run (the box) scores 0 here, the
    outcome reward judges it."""
    target = str(abs(int(row["ground_truth_answer"])))[::-1]
    scores, done = [], 0
    for text in prefixes:
        digits = re.match(r"\d*", text).group(0)
        new = digits[done:] if len(digits) > done else ""
        scores.append(sum(1 if i < len(target) and d == target[i] else -1
                          for i, d in enumerate(new, start=done)) / len(target))
        done = max(done, len(digits))
    return scores
