"""Arithmetic generator and its exact-integer reward."""
import pytest

from tasks.builtin.arith import generate_arith, reward

ROW = {"question": "47+85=", "ground_truth_answer": "132"}


@pytest.mark.parametrize("response, correct", [
    ("\\boxed{132}", True),
    ("231 \\boxed{132}", True),
    ("231 \\boxed{132}\n\nso the answer is 133 }{ 7", True),  # junk after the box is ignored
    ("\\boxed{ 132 }<|endoftext|>garbage", True),
    ("\\boxed{131} no wait \\boxed{132}", True),  # the last box counts
    ("\\boxed{132} no wait \\boxed{131}", False),
    ("\\boxed{133}", False),
    ("\\boxed{132.0}", False),
    ("\\boxed{13 2}", False),
    ("132", False),
    ("\\boxed{132", False),
    ("", False),
])
def test_reward(response, correct):
    result = reward(response, ROW)
    assert result["correct"] is correct and result["reward"] == float(correct)
    assert set(result) == {"reward", "correct", "info"}


def test_generator_is_seeded_and_its_solutions_are_right():
    rows = generate_arith(300, seed=7, min_digits=1, max_digits=3, ops=("+", "-", "*"))
    assert rows == generate_arith(300, seed=7, min_digits=1, max_digits=3, ops=("+", "-", "*"))
    assert rows != generate_arith(300, seed=8, min_digits=1, max_digits=3, ops=("+", "-", "*"))
    for row in rows:
        a, op, b = row["question"].rstrip("=").partition(next(c for c in "+-*" if c in row["question"]))
        assert int(row["ground_truth_answer"]) == {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
        assert int(row["ground_truth_answer"]) >= 0
        assert reward(row["solution"], row)["correct"]
        assert len(row["solution"]) <= 24
    assert {r["question"][-1] for r in rows} == {"="}


def test_difficulty_knobs():
    easy = generate_arith(200, seed=0, min_digits=1, max_digits=2, ops=("+",))
    assert all(max(map(len, r["question"][:-1].split("+"))) <= 2 for r in easy)
    hard = generate_arith(200, seed=0, min_digits=3, max_digits=3, ops=("-",))
    assert all(len(part) == 3 for r in hard for part in r["question"][:-1].split("-"))
    direct = generate_arith(5, seed=0, style="direct")
    assert all(r["solution"] == f"\\boxed{{{r['ground_truth_answer']}}}" for r in direct)
    with pytest.raises(ValueError, match="ops"):
        generate_arith(1, seed=0, ops=("/",))
    with pytest.raises(ValueError, match="min_digits"):
        generate_arith(1, seed=0, min_digits=3, max_digits=2)
