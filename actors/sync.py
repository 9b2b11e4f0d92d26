"""Weight sync orchestration, run by the driver: which transport each rollout worker gets, forming
the broadcast groups, publishing the learner's weights and loading them into the rollout pool, and
re-syncing a worker that Ray restarted. The transports themselves are `actors/weight_sync/`."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import ray
from ray.actor import ActorHandle
from ray.exceptions import ActorUnavailableError, RayActorError

from .weight_sync.planner import GROUP_TRANSPORTS, OBJECT_STORE, plan_transports

if TYPE_CHECKING:  # pools.py imports this module to pick transports when it creates the pools
    from .pools import Pools


def choose_transports(pools: Pools, forced: str) -> list[str]:
    """A transport per rollout worker from where each actor runs (weight_sync.planner)."""
    learner = ray.get(pools.learner[0].placement.remote())
    workers = ray.get([w.placement.remote() for w in pools.rollout])
    return plan_transports(learner, workers, forced)


def form_groups(pools: Pools) -> None:
    """(Re)build each broadcast group: learner rank 0 + every rollout worker using that transport."""
    for kind in GROUP_TRANSPORTS:
        members = [i for i, k in enumerate(pools.transport) if k == kind]
        if members:
            addr, port = ray.get(pools.learner[0].address.remote())
            world = len(members) + 1
            ray.get([pools.learner[0].join_collective.remote(kind, port, world)] +
                    [pools.rollout[i].join_collective.remote(kind, addr, port, r + 1, world)
                     for r, i in enumerate(members)])
    pools.collective_stale = False


def sync_weights(pools: Pools, version: int, workers: list[int] | None = None) -> float:
    """Publish the learner's weights as `version` and load them into `workers` (default: all).
    Returns wall seconds. Every learner rank takes part (a ZeRO-3 gather is collective)."""
    start = time.perf_counter()
    if workers is None:
        workers = list(range(len(pools.rollout)))
        pools.weights_version = version
    kinds = sorted({pools.transport[i] for i in workers})
    groups = [k for k in kinds if k in GROUP_TRANSPORTS]
    if groups and pools.collective_stale:
        form_groups(pools)
    for kind in groups:
        if sum(pools.transport[i] == kind for i in workers) < pools.transport.count(kind):
            raise ValueError(f"a {kind} sync must include every {kind} worker (a broadcast is all-or-none)")
    pools.handles = ray.get([a.publish_weights.remote(version, kinds) for a in pools.learner])[0]
    loads = {i: pools.rollout[i].load_weights.remote(pools.handles[pools.transport[i]]) for i in workers}
    if groups:
        ray.get(pools.learner[0].broadcast_weights.remote(groups))
    for i, ref in loads.items():
        try:
            ray.get(ref)
        except RayActorError:  # died since its last task: Ray restarts it, it gets the weights afresh
            wait_restarted(pools.rollout[i])
            resync_restarted(pools, i, version)
    return time.perf_counter() - start


def wait_restarted(actor: ActorHandle, timeout_s: float = 300.0) -> None:
    """Block until Ray has restarted `actor` (calls fail with ActorUnavailableError meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ray.get(actor.version.remote())
            return
        except ActorUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def resync_restarted(pools: Pools, worker: int, version: int) -> float:
    """A restarted worker lost its weights and any group membership: a group member moves to the
    object store for the rest of the run (its group re-forms without it at the next sync)."""
    if not pools.learner:  # evaluation only: the restarted worker loaded the one checkpoint there is
        return 0.0
    if pools.transport[worker] in GROUP_TRANSPORTS:
        pools.transport[worker] = OBJECT_STORE
        pools.collective_stale = True
    return sync_weights(pools, version, [worker])
