"""Countdown: combine the given numbers with + - * / to reach a target (the d1 / AGRPO task).

Row: {"question": ..., "nums": [3, 5, 7], "target": 22, "solution": "\\boxed{(3*5)+7}"}.
An answer is correct when its expression uses only given numbers, each at most as often as it
is given, and equals the target exactly. Arithmetic is on exact fractions, so (7/2)*4 = 14 counts
while 7/2 never equals an integer; expressions are parsed with `ast`, never eval'd."""
from __future__ import annotations

import ast
import operator
import random
from collections import Counter
from fractions import Fraction

from rewards.extract import extract_boxed
from rewards.result import RewardResult

from ..schemas import Row

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv}
_LATEX_OPS = {"\\times": "*", "\\cdot": "*", "\\div": "/"}
MAX_EXPRESSION_CHARS = 200  # bounds parse time and nesting depth for junk answers


def evaluate(expression: str) -> tuple[Fraction, list[int]]:
    """Exact value of an expression of integers, + - * / and parentheses, and the integers it
    uses. Raises ValueError for anything else (names, calls, **, unary signs, floats)."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression longer than {MAX_EXPRESSION_CHARS} chars")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"not an expression: {err.msg}") from err
    numbers: list[int] = []

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise ValueError("division by zero")
            return _OPS[type(node.op)](left, right)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            numbers.append(node.value)
            return Fraction(node.value)
        raise ValueError(f"{type(node).__name__} is not allowed")

    return walk(tree.body), numbers


def reward(response: str, row: Row) -> dict:
    answer = extract_boxed(response)
    if answer is None:
        return RewardResult.failure("no_answer").as_dict()
    expression = answer.split("=")[0]  # "(3*5)+7=22" states the target; judge the expression
    for latex, op in _LATEX_OPS.items():
        expression = expression.replace(latex, op)
    info = {"answer": answer[:MAX_EXPRESSION_CHARS]}
    try:
        value, used = evaluate(expression)
    except ValueError as err:
        return RewardResult.failure("bad_expression", error=str(err), **info).as_dict()
    excess = Counter(used) - Counter(row["nums"])
    if excess:
        not_given = sorted(n for n in excess if n not in row["nums"])
        reason = "number_not_given" if not_given else "number_reused"
        return RewardResult.failure(reason, numbers=sorted(excess), **info).as_dict()
    if value != row["target"]:
        return RewardResult.failure("wrong_value", value=str(value), **info).as_dict()
    return RewardResult(1.0, True, info).as_dict()


def _parenthesised(expression: str) -> str:
    return expression if expression.isdigit() else f"({expression})"


def _combine(rng: random.Random, a: tuple[int, str], b: tuple[int, str], max_value: int
             ) -> tuple[int, str] | None:
    """A random operation on two (value, expression) terms keeping the value a positive integer
    <= max_value, or None when none does. Trivial steps (*1, /1) are not offered."""
    (x, ex), (y, ey) = a, b
    choices = [(x + y, "+"), (x - y, "-")]
    if 1 not in (x, y):
        choices.append((x * y, "*"))
    if y > 1 and x % y == 0:
        choices.append((x // y, "/"))
    choices = [(v, op) for v, op in choices if 0 < v <= max_value]
    if not choices:
        return None
    value, op = rng.choice(choices)
    return value, f"{_parenthesised(ex)}{op}{_parenthesised(ey)}"


def _random_expression(rng: random.Random, nums: list[int], max_value: int
                       ) -> tuple[int, str] | None:
    """Combine random pairs of terms until one is left: (value, expression) using every number."""
    terms = [(n, str(n)) for n in nums]
    while len(terms) > 1:
        i, j = rng.sample(range(len(terms)), 2)
        combined = _combine(rng, terms[i], terms[j], max_value)
        if combined is None:
            return None
        terms = [t for k, t in enumerate(terms) if k not in (i, j)] + [combined]
    return terms[0]


def _off_target(rng: random.Random, nums: list[int], target: int, max_value: int) -> str | None:
    """A random expression of all `nums` whose value is not `target`, or None after 20 draws."""
    for _ in range(20):
        found = _random_expression(rng, nums, max_value)
        if found is not None and found[0] != target:
            return found[1]
    return None


def sample_countdown(rng: random.Random, min_nums: int = 3, max_nums: int = 4,
                     max_num: int = 20, max_target: int = 100, solution: str = "target") -> Row:
    """Numbers drawn from 1..max_num; the target is the value of a random expression using all
    of them, so every problem has a solution.

    solution: "target", the row's `solution` is that expression; "format", a random expression of
    the same numbers whose value is not the target (when 20 draws find one): SFT on it teaches the
    answer's form (a boxed expression over the given numbers) but never how to reach the target,
    which only RL with the checker can then teach."""
    if not 2 <= min_nums <= max_nums:
        raise ValueError(f"need 2 <= min_nums <= max_nums, got {min_nums}, {max_nums}")
    if max_num < 1 or max_target < 1:
        raise ValueError(f"need max_num >= 1 and max_target >= 1, got {max_num}, {max_target}")
    if solution not in ("target", "format"):
        raise ValueError(f"solution={solution!r}: use 'target' or 'format'")
    for _ in range(10_000):
        nums = [rng.randint(1, max_num) for _ in range(rng.randint(min_nums, max_nums))]
        found = _random_expression(rng, nums, max_target)
        if found is not None:
            target, expression = found
            question = (f"Using the numbers {', '.join(map(str, nums))}, each at most once, "
                        f"and + - * /, write an expression equal to {target}.")
            if solution == "format":
                expression = _off_target(rng, nums, target, max_num**max_nums) or expression
            return {"question": question, "nums": nums, "target": target,
                    "solution": f"\\boxed{{{expression}}}"}
    raise ValueError(f"no countdown problem with targets <= {max_target} found; raise max_target")


def generate_countdown(n: int, seed: int, min_nums: int = 3, max_nums: int = 4,
                       max_num: int = 20, max_target: int = 100) -> list[Row]:
    rng = random.Random(seed)
    return [sample_countdown(rng, min_nums, max_nums, max_num, max_target) for _ in range(n)]
