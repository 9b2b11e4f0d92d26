"""Digit-string generator (reverse / sort) and its exact-answer reward."""
import pytest

from tasks.builtin.digits import generate_digits, reward

ROW = {"question": "reverse 0012345=", "ground_truth_answer": "5432100"}


@pytest.mark.parametrize("op, check", [("reverse", lambda s, a: a == s[::-1]),
                                       ("sort", lambda s, a: list(a) == sorted(s))])
def test_generator_is_seeded_and_its_solutions_are_right(op, check):
    rows = generate_digits(200, seed=5, min_len=3, max_len=9, op=op)
    assert rows == generate_digits(200, seed=5, min_len=3, max_len=9, op=op)
    assert {len(r["ground_truth_answer"]) for r in rows} == set(range(3, 10))
    for row in rows:
        name, s = row["question"][:-1].split(" ")
        assert name == op and s.isdigit() and check(s, row["ground_truth_answer"])
        assert reward(row["solution"], row)["correct"]
    with pytest.raises(ValueError, match="min_len"):
        generate_digits(1, seed=0, min_len=5, max_len=4)
    with pytest.raises(ValueError, match="op must be one of"):
        generate_digits(1, seed=0, op="shuffle")


@pytest.mark.parametrize("response, correct, reason, digit_accuracy", [
    ("\\boxed{5432100}", True, None, 1.0),
    ("so \\boxed{12} then \\boxed{5432100}", True, None, 1.0),  # the last box counts
    ("\\boxed{543210}", False, None, 6 / 7),  # a dropped leading zero is wrong
    ("\\boxed{54321000}", False, None, 1.0),  # one digit too many: every place right, still wrong
    ("\\boxed{5432010}", False, None, 5 / 7),
    ("\\boxed{54321OO}", False, "not_digits", 5 / 7),  # letter O for zero
    ("\\boxed{５432100}", False, "not_digits", 6 / 7),  # a full-width digit is not ASCII
    ("5432100", False, "no_answer", 0.0),
])
def test_reward(response, correct, reason, digit_accuracy):
    result = reward(response, ROW)
    assert result["correct"] is correct and result["reward"] == float(correct)
    assert result["info"].get("reason") == reason
    assert result["info"]["digit_accuracy"] == pytest.approx(digit_accuracy)
