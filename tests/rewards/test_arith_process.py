"""The arith rule-based process reward: each reversed digit checked when the prefix writes it."""
import pytest

from rewards.process import prefixes
from tasks.builtin.arith import process_reward

ROW = {"question": "47+85=", "ground_truth_answer": "132"}  # reversed worked answer: "231"


@pytest.mark.parametrize("texts, expected", [
    (["23", "231 \\bo", "231 \\boxed{132}"], [2 / 3, 1 / 3, 0.0]),    # right digits as they come
    (["2", "23", "231", "231 "], [1 / 3, 1 / 3, 1 / 3, 0.0]),
    (["29", "291 \\bo"], [0.0, 1 / 3]),                                  # +1 -1, then +1
    (["2314", "2314 \\boxed{4132}"], [(3 - 1) / 3, 0.0]),                # a digit past the answer: -1
    (["\\boxed{132}"], [0.0]),                                           # no worked answer: nothing to check
    (["", "1"], [0.0, -1 / 3]),
])
def test_digits_scored_as_written(texts, expected):
    assert process_reward(texts, ROW) == pytest.approx(expected)


def test_a_right_worked_answer_sums_to_one_whatever_the_chunking():
    text = "231 \\boxed{132}"
    ids = [ord(c) for c in text]
    for chunk in range(1, len(ids) + 1):
        texts = prefixes(lambda xs: "".join(map(chr, xs)), ids, chunk)
        assert sum(process_reward(texts, ROW)) == pytest.approx(1.0)
