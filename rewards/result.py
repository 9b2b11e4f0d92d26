"""The value every reward function returns: a reward, a verdict, and details for debugging."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# A verdict is "correct", "incorrect", or a failure: no verdict could be reached (checker down,
# timeout, reward function raised). Failures carry info["failure"]; their reward 0.0 is only a
# placeholder, which the driver never trains on and counts in the step's metrics.
FAILURE_KEY = "failure"


class InvalidReward(ValueError):
    """A reward function returned something that is not a reward (NaN, inf, wrong type)."""


@dataclass
class RewardResult:
    reward: float
    correct: bool
    # Extracted answer, failure reason, per-test results, timings: whatever explains the verdict.
    info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"reward": float(self.reward), "correct": bool(self.correct), "info": self.info}

    @property
    def failed(self) -> str | None:
        """Why no verdict was reached, or None for a real verdict."""
        return self.info.get(FAILURE_KEY)

    @classmethod
    def failure(cls, reason: str, **info: Any) -> "RewardResult":
        """A real verdict of "incorrect", with the reason (no_answer, not_equivalent, ...)."""
        return cls(0.0, False, {"reason": reason, **info})

    @classmethod
    def unavailable(cls, failure: str, **info: Any) -> "RewardResult":
        """No verdict: the checker could not judge (checker_unavailable, timeout, reward_error, ...)."""
        return cls(0.0, False, {FAILURE_KEY: failure, **info})

    @classmethod
    def coerce(cls, value: Any) -> "RewardResult":
        """Accept what a user-supplied reward function may return: a result, a dict or a number."""
        if isinstance(value, RewardResult):
            return cls(_finite(value.reward), _verdict(value.correct), _info(value.info))
        if isinstance(value, dict):
            if "reward" not in value:
                keys = sorted(map(str, value))
                raise InvalidReward(f"reward function returned a dict without 'reward': {keys}"[:300])
            reward = _finite(value["reward"])
            correct = _verdict(value["correct"]) if "correct" in value else reward > 0
            return cls(reward, correct, _info(value.get("info")))
        if isinstance(value, numbers.Real) and not isinstance(value, bool):  # numpy scalars included
            reward = _finite(value)
            return cls(reward, reward > 0, {})
        raise InvalidReward(f"reward function must return a dict or a number, got {type(value).__name__}")


def _finite(value: Any) -> float:
    # A bool or a string is no reward: "0" and "False" would otherwise read as numbers or verdicts.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidReward(f"reward function returned a reward that is not a number: {value!r}"[:300])
    try:
        reward = float(value)
    except (OverflowError, TypeError, ValueError) as exc:  # OverflowError: an int beyond float range
        raise InvalidReward(f"reward function returned a reward that is not a float: {value!r}"[:300]) from exc
    if not math.isfinite(reward):  # a NaN reward would turn every advantage of its group into NaN
        raise InvalidReward(f"reward function returned a non-finite reward {reward}")
    return reward


def _verdict(value: Any) -> bool:
    # bool("False") is True: a verdict that is not a bool (numpy's included) is no verdict.
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidReward(f"reward function returned 'correct' that is not a bool: {value!r}"[:300])
    return bool(value)


def _info(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):  # the reward worker reads info["failure"] and info["error"]
        raise InvalidReward(f"reward function returned 'info' that is not a dict: {type(value).__name__}")
    return dict(value)


@dataclass(frozen=True)
class Score:
    """A worker's verdict on one (prompt, sample), as it travels back to the driver."""
    prompt_uid: str
    sample_idx: int
    reward: float
    correct: bool
    # Set when no verdict was reached (checker_unavailable, timeout, reward_error, ...): the
    # sample is left out of training and counted in the step's metrics.
    failure: str | None = None
    error: str = ""  # what went wrong, for the error that stops a run whose reward is broken
