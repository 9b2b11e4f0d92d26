"""A stand-in scorer for tests/actors/test_lost_batches.py, in a module the Ray workers can import."""
from __future__ import annotations

from ray.exceptions import ObjectLostError

from bench.scale import StandInReward


class LosesFirstRead(StandInReward):
    """Its first call finds its batch gone, as a scorer does whose batch's node died."""

    def __init__(self) -> None:
        self.calls = 0

    def score(self, batch, which, task_rows, parts):
        self.calls += 1
        if self.calls == 1:
            raise ObjectLostError("00" * 28, b"", "")
        return super().score(batch, which, task_rows, parts)
