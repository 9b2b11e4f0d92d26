"""How an RL step is scheduled (docs/design.md §8.4): the rollout schedule (`Lockstep`, or
`Prefetch` for async) and the device sharing (`SeparateDevices`, or `Colocated`) are small
objects the driver's RL step calls at fixed points, chosen once per run (`Run.schedule`,
`Run.devices`); `StepTimer` collects one step's phase seconds."""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import ray

from .config import RunConfig
from .stages import RolloutJob, submit
from .sync import sync_weights

if TYPE_CHECKING:
    from .run import Run


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


def sync(run: Run, timer: StepTimer) -> None:
    """Bring every rollout worker to the learner's version (no-op when they already hold it); the
    rollout workers decode next, so a colocated learner leaves them the device."""
    if run.state.synced != run.state.version:
        timer.add("sync_s", sync_weights(run.pools, run.state.version))
        run.state.synced = run.state.version
    run.devices.free_for_rollout(run, timer)


class Lockstep:
    """async.max_staleness=0: each step's rollout is sampled by the weights its update starts from;
    the step ends by syncing the workers to the new version."""

    def take_job(self, run: Run, timer: StepTimer) -> RolloutJob:
        """This step's rollout: the one already in flight, else submitted now."""
        if run.state.job is None:
            sync(run, timer)  # a no-op unless resumed: the previous step ended with a sync
        return run.state.job or submit(run.pools, *run.next_prompts(), run.cfg.rollout)

    def rollout_done(self, run: Run, timer: StepTimer) -> None:
        run.state.job = run.state.job_cursor = None

    def sync(self, run: Run, timer: StepTimer) -> None:
        sync(run, timer)


class Prefetch(Lockstep):
    """async.max_staleness=1: once step k's rollout is in, the workers take version k and sample
    step k+1 while step k updates; the step ends without a sync."""

    def rollout_done(self, run: Run, timer: StepTimer) -> None:
        super().rollout_done(run, timer)
        if run.state.step + 1 < run.cfg.trainer.steps:
            sync(run, timer)
            run.state.job = submit(run.pools, *run.next_prompts(), run.cfg.rollout)

    def sync(self, run: Run, timer: StepTimer) -> None:
        pass


class SeparateDevices:
    """Rollout workers and learners on their own devices: nothing to free before an update."""

    def free_for_update(self, run: Run, timer: StepTimer) -> dict[str, float]:
        return {}

    def free_for_rollout(self, run: Run, timer: StepTimer) -> None:
        pass


class Colocated(SeparateDevices):
    """cluster.colocate: each rollout worker shares a learner's device. For an update the rollout
    worker releases its weights (the sync after the update brings them back); for decoding the
    learner parks its weights, gradients and optimizer state in host memory (its next update
    brings them back)."""

    def free_for_update(self, run: Run, timer: StepTimer) -> dict[str, float]:
        with timer("sleep_s"):
            return {"rollout_freed_mb": sum(ray.get([w.sleep.remote() for w in run.pools.rollout])) / 2**20}

    def free_for_rollout(self, run: Run, timer: StepTimer) -> None:
        with timer("offload_s"):
            ray.get([a.offload.remote() for a in run.pools.learner])


def schedule_for(cfg: RunConfig) -> Lockstep:
    return Prefetch() if cfg.async_.max_staleness == 1 else Lockstep()


def devices_for(cfg: RunConfig) -> SeparateDevices:
    return Colocated() if cfg.cluster.colocate else SeparateDevices()
