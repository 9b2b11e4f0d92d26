"""Multiple-choice extraction and scoring: explicit verdicts for every outcome (rewards/choice_reward.py)."""
import time

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


TEN = "ABCDEFGHIJ"


@pytest.mark.parametrize("response, truth, choices, reward", [
    # The article "A" and the pronoun "I" are words, not choices.
    ("A careful analysis shows nothing.", "A", "ABCD", 0.0),
    ("A careful analysis shows the answer is C.", "A", "ABCD", 0.0),
    ("A careful look settles it: B", "B", "ABCD", 1.0),
    ("The answer is a number", "A", "ABCD", 0.0),
    ("Answer: a dog", "A", "ABCD", 0.0),
    ("I think it's E", "E", TEN, 1.0),
    ("I'm sure: E", "I", TEN, 0.0),
    ("The answer is I.", "I", TEN, 1.0),
    ("A is correct", "A", "ABCD", 1.0),
    ("The answer is A because it fits", "A", "ABCD", 1.0),
    # Two different options in one statement earn nothing.
    ("The answer is A or B", "A", "ABCD", 0.0),
    ("the answer is (A) and (B)", "B", "ABCD", 0.0),
    # The last statement stands: a reasoning response may correct itself.
    ("Answer: A. Answer: B", "B", "ABCD", 1.0),
    ("The answer is A. Wait, checking the units again, the answer is B.", "B", "ABCD", 1.0),
    ("The answer is A. Wait, checking the units again, the answer is B.", "A", "ABCD", 0.0),
    ("The answer is B. Hmm, the answer is A or C.", "B", "ABCD", 0.0),
    ("Option A is wrong, the answer is B", "A", "ABCD", 0.0),
    ("Option A is wrong, the answer is B", "B", "ABCD", 1.0),
    # A letter inside a name or number is no choice.
    ("Vitamin B12", "B", "ABCD", 0.0),
    ("Vitamin B12 is the cause, so C", "C", "ABCD", 1.0),
    # The forms models answer with.
    ("The answer is (B)", "B", "ABCD", 1.0), ("Answer: B", "B", "ABCD", 1.0), ("\\boxed{B}", "B", "ABCD", 1.0),
    ("**B**", "B", "ABCD", 1.0), ("(B)", "B", "ABCD", 1.0), ("B.", "B", "ABCD", 1.0), ("B) text", "B", "ABCD", 1.0),
    ("option B", "B", "ABCD", 1.0), ("the correct choice is B", "B", "ABCD", 1.0), ("**Answer:** B", "B", "ABCD", 1.0),
    ("A or B? The final answer is $\\boxed{\\text{B}}$.", "B", "ABCD", 1.0), ("<answer>B</answer>", "B", "ABCD", 1.0),
    ("the answer is b", "B", "ABCD", 1.0), ("The answer is (G).", "G", TEN, 1.0),
])
def test_reward_of_answer_forms(response, truth, choices, reward):
    assert choice_reward(response, {"ground_truth_answer": truth, "choices": choices}).reward == reward


def test_extraction_is_linear():
    start = time.monotonic()
    for text in ("answer is " * 100000 + " " * 100000, "A careful. " * 100000, "the answer is A" + " ," * 100000):
        extract_choice(text)
    assert time.monotonic() - start < 2.0
