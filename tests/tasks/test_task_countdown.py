"""Countdown generator and its reward: number bookkeeping and exact, eval-free evaluation."""
import random

import pytest

from rewards.extract import extract_boxed
from tasks.builtin.countdown import evaluate, generate_countdown, reward, sample_countdown

ROW = {"question": "...", "nums": [3, 5, 7, 5], "target": 22}


@pytest.mark.parametrize("response, reason", [
    ("\\boxed{3*5+7}", None),
    ("so \\boxed{(3*5)+7 = 22}.", None),
    ("\\boxed{3 \\times 5 + 7}", None),
    ("\\boxed{5*5-3}", None),  # 5 is given twice, so twice is allowed
    ("\\boxed{(7/3)*3+5*3}", "number_reused"),
    ("\\boxed{5*5*5-3}", "number_reused"),
    ("\\boxed{2*11}", "number_not_given"),  # right value, numbers not given
    ("\\boxed{3*7+1}", "number_not_given"),
    ("\\boxed{7/3}", "wrong_value"),  # a non-integer can never hit an integer target
    ("\\boxed{3*5+5}", "wrong_value"),
    ("\\boxed{3**5}", "bad_expression"),
    ("\\boxed{-3+5*5}", "bad_expression"),  # unary minus is not one of the four operations
    ("\\boxed{__import__('os')}", "bad_expression"),
    ("\\boxed{22.0}", "bad_expression"),
    ("\\boxed{7/(5-5)}", "bad_expression"),
    ("\\boxed{" + "(" * 150 + "3" + ")" * 150 + "}", "bad_expression"),
    ("22", "no_answer"),
])
def test_reward(response, reason):
    result = reward(response, ROW)
    assert result["correct"] is (reason is None)
    assert result["info"].get("reason") == reason


def test_exact_fractions_allow_non_integer_steps():
    assert evaluate("(7/2)*4") == (14, [7, 2, 4])
    assert reward("\\boxed{(7/2)*4}", {"nums": [2, 4, 7], "target": 14})["correct"]


def test_generator_is_seeded_and_solvable():
    rows = generate_countdown(300, seed=1)
    assert rows == generate_countdown(300, seed=1) and rows != generate_countdown(300, seed=2)
    for row in rows:
        assert 3 <= len(row["nums"]) <= 4 and 1 <= row["target"] <= 100
        assert str(row["target"]) in row["question"]
        assert reward(row["solution"], row)["correct"], row
    assert any("*" in r["solution"] or "/" in r["solution"] for r in rows)


def test_format_solutions_have_the_answer_form_but_miss_the_target():
    """solution=format: a boxed expression of exactly the given numbers whose value is (almost)
    never the target, so SFT on it teaches the form and not the answer. Almost: numbers such as
    1, 1 combine into one value only (1+1; no step may give 0 or multiply/divide by 1)."""
    rng = random.Random(0)
    rows = [sample_countdown(rng, 2, 3, 9, 50, solution="format") for _ in range(500)]
    verdicts = [reward(r["solution"], r) for r in rows]
    assert sum(v["correct"] for v in verdicts) <= 10  # 2%; the target expressions: 100%
    for r, v in zip(rows, verdicts):
        value, used = evaluate(extract_boxed(r["solution"]))
        assert sorted(used) == sorted(r["nums"])  # well formed: every given number once
        assert v["correct"] or v["info"]["reason"] == "wrong_value"
    with pytest.raises(ValueError, match="solution='hint'"):
        sample_countdown(rng, solution="hint")
