"""Weight sync orchestration, run by the driver: which transport each rollout worker gets, forming
the collective group, publishing the learner's weights and loading them into the rollout pool, and
re-syncing a worker that Ray restarted. The transports themselves are `actors/weight_sync.py`."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import ray
from ray.actor import ActorHandle
from ray.exceptions import ActorUnavailableError, RayActorError

if TYPE_CHECKING:  # pools.py imports this module to pick transports when it creates the pools
    from .pools import Pools


def choose_transports(pools: Pools, forced: str) -> list[str]:
    """shared_memory on learner rank 0's node, collective elsewhere (unless a transport is forced)."""
    if forced != "auto":
        return [forced] * len(pools.rollout)
    home = ray.get(pools.learner[0].node_id.remote())
    nodes = ray.get([w.node_id.remote() for w in pools.rollout])
    return ["shared_memory" if n == home else "collective" for n in nodes]


def form_collective(pools: Pools) -> None:
    """(Re)build the gloo group learner-0 + every rollout worker using the collective transport."""
    members = [i for i, kind in enumerate(pools.transport) if kind == "collective"]
    if members:
        addr, port = ray.get(pools.learner[0].address.remote())
        world = len(members) + 1
        ray.get([pools.learner[0].join_collective.remote(port, world)] +
                [pools.rollout[i].join_collective.remote(addr, port, r + 1, world) for r, i in enumerate(members)])
    pools.collective_stale = False


def sync_weights(pools: Pools, version: int, workers: list[int] | None = None) -> float:
    """Publish the learner's weights as `version` and load them into `workers` (default: all).
    Returns wall seconds. Every learner rank takes part (a ZeRO-3 gather is collective)."""
    start = time.perf_counter()
    if workers is None:
        workers = list(range(len(pools.rollout)))
        pools.weights_version = version
    kinds = sorted({pools.transport[i] for i in workers})
    if "collective" in kinds and pools.collective_stale:
        form_collective(pools)
    if "collective" in kinds and len(workers) < pools.transport.count("collective"):
        raise ValueError("a collective sync must include every collective worker (a broadcast is all-or-none)")
    pools.handles = ray.get([a.publish_weights.remote(version, kinds) for a in pools.learner])[0]
    loads = {i: pools.rollout[i].load_weights.remote(pools.handles[pools.transport[i]]) for i in workers}
    if "collective" in kinds:
        ray.get(pools.learner[0].broadcast_weights.remote())
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
    """A restarted worker lost its weights and any collective membership: a collective worker moves
    to the object store for the rest of the run (the group re-forms without it at the next sync)."""
    if not pools.learner:  # evaluation only: the restarted worker loaded the one checkpoint there is
        return 0.0
    if pools.transport[worker] == "collective":
        pools.transport[worker] = "object_store"
        pools.collective_stale = True
    return sync_weights(pools, version, [worker])
