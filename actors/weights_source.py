"""Where the rollout workers' weights come from (actors/rollout_group.py holds one): the learner
group's publisher (actors/weight_sync/publisher.py), or, for evaluation, the checkpoint each worker
loaded when it started."""
from __future__ import annotations

from typing import Protocol

from .timer import StepTimer
from .weight_sync.buckets import Sealed


class Weights(Protocol):
    """Where the rollout workers' weights come from: the learner group, or (evaluation only) the
    checkpoint each worker loaded when it started."""
    @property
    def held(self) -> int:
        """The version every rollout worker holds."""

    def publish(self, timer: StepTimer) -> None:
        """Bring every rollout worker to the learner's version (nothing when they hold it)."""

    def resync(self, worker: int) -> None:
        """Give a worker Ray restarted the version the others hold."""

    def retire(self, worker: int) -> None:
        """A worker left the pool (its node is draining or gone): no more weights for it."""

    def add(self, worker: int) -> None:
        """A fresh worker joined the pool in slot `worker`: its transport, and the version the others hold."""

    def binding(self, worker: int) -> Sealed | None:
        """What a generate call to `worker` carries: weights it binds first if it has not (shared
        memory); None when they were delivered to it."""


class Checkpoint:
    """Evaluation only: every worker holds version 0, the checkpoint it loaded (a restarted one too)."""
    held = 0

    def publish(self, timer: StepTimer) -> None:
        pass

    def resync(self, worker: int) -> None:
        pass

    def retire(self, worker: int) -> None:
        pass

    def add(self, worker: int) -> None:
        pass

    def binding(self, worker: int) -> Sealed | None:
        return None
