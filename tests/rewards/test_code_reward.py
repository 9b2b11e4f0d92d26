"""Honest programs score what they deserve; bad rows fail loudly."""
import pytest

from conftest import as_response
from rewards import score_batch
from rewards.code_reward import CodeReward, normalize_output

ADD_ROW = {"test_method": "function", "test_time_limit": 1,
           "test_list": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]}
SUM_ROW = {"test_method": "stdio", "test_time_limit": 1,
           "test_input": ["1 2\n", "10 20\n", "-5 5\n"], "test_output": ["3\n", "30", "0\n\n"]}


def test_correct_function_solution_scores_one(code_reward, fenced):
    result = code_reward(fenced("def add(a, b):\n    return a + b"), ADD_ROW)
    assert result["reward"] == 1.0 and result["correct"] is True
    assert [t["passed"] for t in result["info"]["tests"]] == [True, True, True]


def test_correct_stdio_solution_scores_one(code_reward, fenced):
    program = "import sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b)"
    result = code_reward(fenced(program), SUM_ROW)
    assert result["reward"] == 1.0 and result["correct"] is True


def test_stdio_comparison_ignores_whitespace_only():
    assert normalize_output("1  2 \n3\n\n") == normalize_output(" 1 2\n3")
    assert normalize_output("1 2 3") != normalize_output("1 2\n3")


def test_partially_correct_solutions_score_the_fraction(code_reward, fenced):
    result = code_reward(fenced("def add(a, b):\n    return a + b if a > 0 else 7"), ADD_ROW)
    assert result["reward"] == pytest.approx(2 / 3) and result["correct"] is False
    stdio = code_reward(fenced("a, b = map(int, input().split())\nprint(a + b if a > 0 else 1)"), SUM_ROW)
    assert stdio["reward"] == pytest.approx(2 / 3)
    assert stdio["info"]["tests"][2]["reason"] == "wrong_answer"


def test_count_scoring(code_reward, fenced):
    counting = CodeReward(score="count", default_time_limit=1.0)
    assert counting(fenced("def add(a, b):\n    return a + b if a > 0 else 7"), ADD_ROW)["reward"] == 2.0


def test_timeout_on_one_test_keeps_credit_for_the_others(code_reward, fenced):
    program = "def add(a, b):\n    while a < 0:\n        pass\n    return a + b"
    result = code_reward(fenced(program), ADD_ROW)
    assert result["reward"] == pytest.approx(2 / 3)
    assert result["info"]["tests"][1]["reason"] == "timeout"
    slow_stdio = "a, b = map(int, input().split())\nwhile a < 0:\n    pass\nprint(a + b)"
    assert code_reward(fenced(slow_stdio), SUM_ROW)["reward"] == pytest.approx(2 / 3)


def test_crash_inside_one_test_keeps_credit_for_the_others(code_reward, fenced):
    program = "import os\ndef add(a, b):\n    if a < 0:\n        os._exit(0)\n    return a + b"
    result = code_reward(fenced(program), ADD_ROW)
    assert [t["passed"] for t in result["info"]["tests"]] == [True, False, True]


def test_prefix_is_prepended(code_reward, fenced):
    row = dict(ADD_ROW, prefix="from operator import add as plus")
    assert code_reward(fenced("def add(a, b):\n    return plus(a, b)"), row)["correct"]


def test_programs_that_do_not_run(code_reward, fenced):
    assert code_reward("no code at all", ADD_ROW)["info"]["reason"] == "no_code_block"
    broken = code_reward(fenced("def add(a, b) return a"), ADD_ROW)
    assert broken["reward"] == 0.0 and "SyntaxError" in broken["info"]["tests"][0]["reason"]
    raising = code_reward(fenced("raise ValueError('nope')"), ADD_ROW)
    assert raising["reward"] == 0.0 and "ValueError" in raising["info"]["tests"][0]["reason"]


def test_stdlib_works_inside_the_sandbox(code_reward, fenced):
    program = ("import collections, dataclasses, enum, fractions, heapq, itertools, math, re, typing\n"
               "P = collections.namedtuple('P', 'x y')\n"
               "@dataclasses.dataclass\nclass Q:\n    v: int\n"
               "def add(a, b):\n    return P(a, b).x + Q(b).v")
    assert code_reward(fenced(program), ADD_ROW)["correct"]


@pytest.mark.parametrize("row, field", [
    ({"test_method": "unit", "test_list": []}, "test_method"),
    ({"test_list": ["assert True"]}, "test_method"),
    ({"test_method": "function"}, "test_list"),
    ({"test_method": "stdio", "test_input": ["1"]}, "test_output"),
    # -1 ("no limit" in some datasets) failed every test as a timeout: a confident 0 for a right answer
    ({**SUM_ROW, "test_time_limit": -1}, "test_time_limit"),
    ({**SUM_ROW, "test_time_limit": float("nan")}, "test_time_limit"),
    ({**SUM_ROW, "test_time_limit": float("inf")}, "test_time_limit"),
])
def test_bad_rows_name_the_field(code_reward, row, field, fenced):
    with pytest.raises((KeyError, ValueError), match=field):
        code_reward(fenced("pass"), row)


def test_batch_scores_many_programs_concurrently(code_reward, fenced):
    good, bad = fenced("def add(a, b):\n    return a + b"), fenced("def add(a, b):\n    return 0")
    out = score_batch(code_reward, [good, bad] * 4, [ADD_ROW] * 8, concurrency=4)
    assert [o["correct"] for o in out] == [True, False] * 4


HONEST = """
import math
from dataclasses import dataclass

@dataclass
class Point:  # a helper class the tests never see
    x: float
    y: float

    def norm(self):
        return math.hypot(self.x, self.y)

def distance(x, y):
    return Point(x, y).norm()

def stats(values):
    return {"min": min(values), "max": max(values), "mean": sum(values) / len(values)}

def split_pair(text):
    left, _, right = text.partition(":")
    return left, right or None

def letters(text):
    return set(text)

def find(values, target):
    return values.index(target) if target in values else None
"""
HONEST_TESTS = ["assert math.isclose(distance(1, 1), 2 ** 0.5)", "assert abs(distance(3, 4) - 5.0) < 1e-9",
                "assert distance(0.1, 0.2) != 0.3", "assert stats([1, 2, 3]) == {'min': 1, 'max': 3, 'mean': 2.0}",
                "assert split_pair('a:b') == ('a', 'b')", "assert split_pair('a')[1] is None",
                "assert letters('abca') == {'a', 'b', 'c'}", "assert 'z' not in letters('abc')",
                "assert find([1, 2], 3) is None", "assert find([1, 2], 2) == 1",
                "assert sorted(letters('ba')) == ['a', 'b']", "p = distance(6, 8)\nassert p == 10.0"]


def test_honest_programs_score_one_under_trusted_comparisons(code_reward, fenced):
    row = {"test_method": "function", "test_list": HONEST_TESTS, "test_time_limit": 1}
    result = code_reward(fenced(HONEST), row)
    assert result["reward"] == 1.0, [t for t in result["info"]["tests"] if not t["passed"]]


def test_a_returned_object_of_the_program_fails_even_when_equal(code_reward, fenced):
    program = "class Box:\n    def __init__(self, v):\n        self.v = v\n    def __eq__(self, o):\n" \
              "        return isinstance(o, Box) and o.v == self.v\ndef box(v):\n    return Box(v)\n"
    row = {"test_method": "function", "test_list": ["assert box(1) == box(1)", "assert box(1).v == 1"]}
    tests = code_reward(fenced(program), row)["info"]["tests"]
    assert [t["passed"] for t in tests] == [False, True] and "not plain data" in tests[0]["reason"]


def test_canonical_solutions_pass_in_full(code_reward):
    from canonical_problems import PROBLEMS

    responses = [as_response(solution) for solution, _ in PROBLEMS.values()]
    rows = [{"test_method": "function", "test_list": tests, "test_time_limit": 2} for _, tests in PROBLEMS.values()]
    results = score_batch(code_reward, responses, rows, concurrency=4)
    failed = {name: [t for t in r["info"]["tests"] if not t["passed"]]
              for name, r in zip(PROBLEMS, results) if r["reward"] != 1.0}
    assert len(PROBLEMS) >= 15 and not failed


def test_statements_before_a_compared_assert(code_reward, fenced):
    row = {"test_method": "function", "test_list": ["x = add(1, 2)\nassert x == 3", "x = 1 / 0\nassert x == 1",
                                                    "x = add(1, 1)\nassert x == 3"]}
    tests = code_reward(fenced("def add(a, b):\n    return a + b"), row)["info"]["tests"]
    assert [t["passed"] for t in tests] == [True, False, False]
    assert "ZeroDivisionError" in tests[1]["reason"] and tests[2]["reason"] == "AssertionError"
