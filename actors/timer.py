"""One step's phase seconds (`rollout_s`, `advantage_s`, `update_s`, `sync_s`, ...)."""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class StepTimer:
    """Seconds per phase of one step; a phase timed twice (the sync) adds up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, key: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.add(key, time.perf_counter() - start)

    def add(self, key: str, seconds: float) -> None:
        self.seconds[key] = self.seconds.get(key, 0.0) + seconds
