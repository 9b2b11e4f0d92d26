"""Weight sync as the driver runs it for one learner group (docs/design.md §8.3): the transport of
each rollout worker, chosen once when the group starts (planner.py); each broadcast group's life
(collective.WeightGroup); publishing a version and loading it into the rollout workers; and the
version every rollout worker holds — the run's one such counter.

Workers on the shared-memory transport are not called at a sync: the version is in its slot once
rank 0 wrote it, and each of them binds it at its next `generate`, whose call carries the handle
(`binding`). A sync therefore costs one write whatever the number of workers on rank 0's node,
and no worker is called only to be told a version."""
from __future__ import annotations

import logging
import time
from typing import Callable

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayActorError, RayTaskError

from ..liveness import wait_restarted
from .buckets import Sealed, WeightsHandle
from .collective import WeightGroup
from .planner import GROUP_TRANSPORTS, OBJECT_STORE, SHARED_MEMORY, plan_transports

log = logging.getLogger(__name__)


class WeightPublisher:
    def __init__(self, ranks: list[ActorHandle], workers: list[ActorHandle], forced: str,
                 retired: set[int] | None = None, left: Callable[[int], bool] = lambda worker: False) -> None:
        """`workers` by pool slot (a list the rollout group grows and refills); `retired`: slots out
        of the pool, which get no weights until `add` brings a fresh worker in; `left(i)`: whether
        worker i, whose load failed, has left the pool (its node draining or gone; it calls `retire`)."""
        self.ranks, self.workers, self.forced, self.left = ranks, workers, forced, left
        self.retired = set(retired or ())
        self.learner = ray.get(ranks[0].placement.remote())
        active = self.active
        planned = plan_transports(self.learner, ray.get([workers[i].placement.remote() for i in active]), forced)
        self.transports: list[str | None] = [None] * len(workers)  # None: a retired slot
        for i, kind in zip(active, planned):
            self.transports[i] = kind
        self.groups = {kind: WeightGroup(kind, [i for i, k in enumerate(self.transports) if k == kind])
                       for kind in GROUP_TRANSPORTS if kind in self.transports}
        self.held = 0  # the version every rollout worker holds (-1: unknown, a sync is due)
        self.handles: dict[str, WeightsHandle] = {}  # the last sync's: they keep its objects alive
        self.pulled: Sealed | None = None  # the shared-memory handle of the last version published
        self.sent_bytes = 0  # weight bytes delivered to rollout workers since the last take_sent_bytes()

    def publish(self, version: int, workers: list[int] | None = None) -> float:
        """Publish the learner's weights as `version` and load them into `workers` (default: all;
        shared-memory workers bind it in their next generate instead); wall seconds. Every learner
        rank takes part (a ZeRO-3 gather is collective)."""
        start = time.perf_counter()
        if workers is None:
            workers = self.active
            self.held = version
        kinds = sorted({self.transports[i] for i in workers})
        groups = [self.groups[k] for k in kinds if k in self.groups]
        for group in groups:
            group.check_complete(workers)
            group.form(self.ranks[0], self.workers)
        self.handles = ray.get([a.publish_weights.remote(version, kinds) for a in self.ranks])[0]
        # A handle's index has an entry per tensor (~20 KB pickled for a 7B model, ~1 ms): pickled
        # once (Sealed) rather than again into every worker's call; one holding object refs is put once.
        args = {kind: ray.put(handle) if handle.by_reference else Sealed.of(handle)
                for kind, handle in self.handles.items()}
        self.pulled = args.get(SHARED_MEMORY, self.pulled)
        loads = {i: self.workers[i].load_weights.remote(args[self.transports[i]]) for i in workers
                 if self.transports[i] != SHARED_MEMORY}  # those bind it in their next generate
        self.sent_bytes += sum(sum(self.handles[self.transports[i]].bucket_sizes) for i in workers)
        if groups:
            try:  # a member dying mid-broadcast fails it: rank 0 then drops the group (Senders.send)
                ray.get(self.ranks[0].broadcast_weights.remote([g.transport for g in groups]))
            except RayTaskError as err:
                log.warning("a weight broadcast failed (%s); its members are synced again", err.cause)
                for group in groups:  # its members that did receive join a fresh one before the next sync
                    group.formed = False
        for i, ref in loads.items():
            try:
                ray.get(ref)
            except RayActorError:  # died since its last task
                if self.left(i):  # with its node: out of the pool (a fresh worker takes the slot later)
                    continue
                wait_restarted(self.workers[i])  # Ray restarts it, it gets the weights afresh
                self.resync(i)
            except RayTaskError:
                if self.transports[i] not in GROUP_TRANSPORTS:
                    raise
                self.resync(i)  # its broadcast group broke under it (another member died)
        return time.perf_counter() - start

    def binding(self, worker: int) -> Sealed | None:
        """What a generate call to `worker` carries: the shared-memory handle of the version published
        last, which the worker binds if it has not (None: its transport delivered the version)."""
        return self.pulled if self.transports[worker] == SHARED_MEMORY else None

    def take_sent_bytes(self) -> int:
        """Weight bytes delivered since the last call (a step's `sync_bytes`, evaluation syncs included)."""
        sent, self.sent_bytes = self.sent_bytes, 0
        return sent

    @property
    def active(self) -> list[int]:
        return [i for i in range(len(self.workers)) if i not in self.retired]

    def retire(self, worker: int) -> None:
        """The worker left the pool: out of its broadcast group (re-formed before the next sync)."""
        kind = self.transports[worker]
        if kind in self.groups:
            self.groups[kind].leave(worker)
        self.retired.add(worker)
        self.transports[worker] = None

    def add(self, worker: int, sync: bool = True) -> float:
        """A fresh worker in slot `worker`: a transport that needs no group (forming one again would
        stall the others), then (`sync`) the version the others hold (nothing while that is unknown)."""
        place = ray.get(self.workers[worker].placement.remote())
        kind = plan_transports(self.learner, [place], self.forced if self.forced not in GROUP_TRANSPORTS
                               else OBJECT_STORE)[0]
        self.transports[worker] = OBJECT_STORE if kind in GROUP_TRANSPORTS else kind
        self.retired.discard(worker)
        return self.publish(self.held, [worker]) if sync and self.held >= 0 else 0.0

    def resync(self, worker: int) -> float:
        """A worker Ray restarted lost its weights and any group membership: a group member leaves
        its group and reads the object store for the rest of the learner group's life."""
        kind = self.transports[worker]
        if kind in self.groups:
            self.groups[kind].leave(worker)
            self.transports[worker] = OBJECT_STORE
        return self.publish(self.held, [worker])
