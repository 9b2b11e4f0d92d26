import math
import threading
import time

import numpy as np
import pytest

from rewards import CodeReward, MathReward, RewardResult, get_reward, score_batch


def test_builtin_names_and_options():
    assert isinstance(get_reward("math"), MathReward)
    assert get_reward("math", timeout=2.0).timeout == 2.0
    assert get_reward("code", score="count").score == "count"
    assert isinstance(get_reward("code"), CodeReward)
    with pytest.raises(TypeError):
        get_reward("math", not_an_option=1)
    with pytest.raises(ValueError, match="score must be"):
        get_reward("code", score="best")
    with pytest.raises(ValueError, match="unknown reward 'chess'"):
        get_reward("chess")


def test_dotted_path_with_bound_options(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def length(response, row, scale=1.0):\n"
        "    return {'reward': scale * len(response), 'correct': True, 'info': {'row': row['id']}}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = get_reward("my_rewards:length", scale=0.5)
    assert fn("abcd", {"id": 1}) == {"reward": 2.0, "correct": True, "info": {"row": 1}}
    with pytest.raises(ValueError, match="cannot load reward"):
        get_reward("my_rewards:missing")


def test_batch_keeps_order_and_isolates_crashes():
    def flaky(response: str, row: dict) -> dict:
        if response == "boom":
            raise RuntimeError("exploded")
        return RewardResult(float(response), True, {}).as_dict()

    out = score_batch(flaky, ["1", "boom", "3"], [{}, {}, {}], concurrency=2)
    assert [o["reward"] for o in out] == [1.0, 0.0, 3.0]
    assert out[1]["correct"] is False
    assert out[1]["info"] == {"failure": "reward_error", "error": "RuntimeError: exploded"}


def test_a_reward_that_edits_its_row_does_not_change_the_siblings_row():
    # The samples of one prompt share their row dict (actors/rollout_group.py sends it once per prompt).
    def popping(response: str, row: dict) -> float:
        return float(row.pop("ground_truth_answer") == response)

    row = {"ground_truth_answer": "2"}
    out = score_batch(popping, ["2", "2", "3"], [row, row, row], concurrency=1)
    assert [o["reward"] for o in out] == [1.0, 1.0, 0.0] and row == {"ground_truth_answer": "2"}


def test_batch_reports_bad_rows_per_item():
    out = score_batch("math", ["\\boxed{2}", "\\boxed{2}"], [{"ground_truth_answer": "2"}, {"question": "?"}])
    assert out[0]["correct"] is True
    assert out[1]["reward"] == 0.0 and "ground_truth_answer" in out[1]["info"]["error"]
    assert out[1]["info"]["failure"] == "reward_error"  # a bad row is no verdict, not a wrong answer


def test_batch_argument_checks():
    with pytest.raises(ValueError, match="2 responses but 1 rows"):
        score_batch("math", ["a", "b"], [{}])
    with pytest.raises(ValueError, match="concurrency"):
        score_batch("math", [], [], concurrency=0)


def test_custom_rewards_may_return_numbers():
    out = score_batch(lambda response, row: 0.25, ["x"], [{}])
    assert out == [{"reward": 0.25, "correct": True, "info": {}}]


@pytest.mark.parametrize("bad", [math.nan, math.inf, {"reward": math.nan}, {"reward": "high"}, "1.0", None])
def test_non_finite_or_non_numeric_rewards_are_failures(bad):
    [out] = score_batch(lambda response, row: bad, ["x"], [{}])
    assert out["reward"] == 0.0 and out["correct"] is False
    assert out["info"]["failure"] == "invalid_reward", out


def test_hung_reward_functions_time_out_and_the_batch_goes_on():
    release = threading.Event()

    def sometimes_hangs(response: str, row: dict) -> float:
        if response == "hang":
            release.wait(60)  # hangs until the test ends
        return 1.0

    # Both threads hang at first: the remaining items must still run on fresh threads.
    responses = ["hang", "hang", "ok", "ok", "hang", "ok"]
    start = time.monotonic()
    out = score_batch(sometimes_hangs, responses, [{}] * len(responses), concurrency=2, timeout=0.3)
    elapsed = time.monotonic() - start
    release.set()
    assert elapsed < 3.0, elapsed
    assert [o["info"].get("failure") for o in out] == [None if r == "ok" else "timeout" for r in responses]
    assert [o["reward"] for o in out] == [1.0 if r == "ok" else 0.0 for r in responses]
    with pytest.raises(ValueError, match="timeout"):
        score_batch(sometimes_hangs, [], [], timeout=0)


@pytest.mark.parametrize("bad, error", [
    ({"reward": 0.0, "correct": "False"}, "'correct' that is not a bool: 'False'"),  # bool("False") read as correct
    (RewardResult(1.0, "no"), "'correct' that is not a bool: 'no'"),
    ({"reward": 1.0, "correct": None}, "'correct' that is not a bool: None"),
    ({"reward": True}, "not a number: True"),
    ({"reward": "1.0"}, "not a number: '1.0'"),
    ({"reward": 1.0, "info": "text"}, "'info' that is not a dict: str"),
    (RewardResult(1.0, True, ["x"]), "'info' that is not a dict: list"),
    (10 ** 400, "not a float"),
])
def test_malformed_verdicts_or_info_are_invalid_rewards(bad, error):
    [out] = score_batch(lambda response, row: bad, ["x"], [{}])
    assert out["reward"] == 0.0 and out["correct"] is False
    assert out["info"]["failure"] == "invalid_reward" and error in out["info"]["error"], out


@pytest.mark.parametrize("value, expected", [
    (np.float32(0.5), {"reward": 0.5, "correct": True, "info": {}}),
    (np.int64(0), {"reward": 0.0, "correct": False, "info": {}}),
    ({"reward": np.float64(1.0), "correct": np.bool_(True)}, {"reward": 1.0, "correct": True, "info": {}}),
    (RewardResult(1.0, True, None), {"reward": 1.0, "correct": True, "info": {}}),  # info None: the worker reads it
])
def test_numpy_scalars_and_missing_info_are_accepted(value, expected):
    assert score_batch(lambda response, row: value, ["x"], [{}]) == [expected]


class _UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message")


def _exits(response: str, row: dict) -> float:
    raise SystemExit(3)


def _unprintable(response: str, row: dict) -> float:
    raise _UnprintableError()


@pytest.mark.parametrize("fn, error", [(_exits, "SystemExit: 3"),
                                       (_unprintable, "_UnprintableError (its message could not be read)")])
def test_a_reward_that_exits_or_cannot_be_described_is_a_reward_error_not_a_timeout(fn, error):
    # Before: the thread died without an answer, so the item read as a timeout (or hung without one).
    [out] = score_batch(fn, ["x"], [{}], timeout=5.0)
    assert out == {"reward": 0.0, "correct": False, "info": {"failure": "reward_error", "error": error}}
