"""The value every reward function returns: a reward, a verdict, and details for debugging."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RewardResult:
    reward: float
    correct: bool
    # Extracted answer, failure reason, per-test results, timings: whatever explains the verdict.
    info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"reward": float(self.reward), "correct": bool(self.correct), "info": self.info}

    @classmethod
    def failure(cls, reason: str, **info: Any) -> "RewardResult":
        return cls(0.0, False, {"reason": reason, **info})

    @classmethod
    def coerce(cls, value: Any) -> "RewardResult":
        """Accept what a user-supplied reward function may return: a result, a dict or a number."""
        if isinstance(value, RewardResult):
            return value
        if isinstance(value, dict):
            if "reward" not in value:
                raise ValueError(f"reward function returned a dict without 'reward': {sorted(value)}")
            reward = float(value["reward"])
            return cls(reward, bool(value.get("correct", reward > 0)), dict(value.get("info") or {}))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cls(float(value), value > 0, {})
        raise TypeError(f"reward function must return a dict or a number, got {type(value).__name__}")
