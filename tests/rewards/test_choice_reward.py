"""Multiple-choice extraction and scoring: explicit verdicts for every outcome (rewards/choice_reward.py)."""
import pytest

from rewards.choice_reward import choice_reward, extract_choice
from rewards.registry import score_batch

ROW = {"question": "q", "ground_truth_answer": "B"}


@pytest.mark.parametrize("response, chosen, how", [
    ("B", "B", "standalone"), ("(B)", "B", "standalone"), ("B. 2", "B", "standalone"), (" b)", None, "no_answer"),
    ("The answer is C.", "C", "stated"), ("answer: (d)", "D", "stated"), ("A or B? Answer: A", "A", "stated"),
    ("A or B", None, "ambiguous"), ("BAD", None, "no_answer"), ("", None, "no_answer"), ("E", None, "no_answer"),
    ("I think B, B.", "B", "standalone"),
])
def test_extract_choice(response, chosen, how):
    assert extract_choice(response) == (chosen, how)


def test_verdicts():
    assert choice_reward("B", ROW).as_dict() == {"reward": 1.0, "correct": True,
                                                 "info": {"extracted": "B", "found": "standalone"}}
    wrong = choice_reward("C", ROW)
    assert (wrong.reward, wrong.correct, wrong.info["reason"], wrong.failed) == (0.0, False, "wrong_choice", None)
    assert choice_reward("no letter", ROW).info["reason"] == "no_answer"
    assert choice_reward("A B", ROW).info["reason"] == "ambiguous"
    assert choice_reward("E", {**ROW, "ground_truth_answer": "(e).", "choices": "ABCDE"}).correct
    bad = choice_reward("B", {**ROW, "ground_truth_answer": "7"})  # a broken row: no verdict, not "wrong"
    assert bad.failed == "bad_ground_truth"
    # By name through the registry, as reward workers resolve it.
    assert [r["correct"] for r in score_batch("choice", ["B", "A"], [ROW, ROW])] == [True, False]
