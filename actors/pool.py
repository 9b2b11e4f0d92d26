"""An elastic pool of stateless workers (rollout, reward, judge; docs/design.md §8.6): its slots, a
placement-group bundle each (`cluster.<pool>.num_workers` of them: the target; actors/placement.py),
who works in each and on which node, and which slots are retired (a slot whose bundle was not
placed yet when the run started is one: it has no worker until Ray places it).

A worker whose node is draining or gone is retired: it gets no new work, finishes (or hands back)
what it holds, and is then killed without a restart, so Ray never starts it again on that node.
When Ray has placed the slot's bundle (again, after the node went) on a usable node — remaining or
new capacity — a fresh worker is started there; its owner gives it the current weights before any
work. The pool works on with as few as `min_workers`; below that the run waits for capacity.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import ray
from ray.actor import ActorHandle

from .cluster_watch import ClusterWatch
from .liveness import poll, wait_name_free
from .placement import Slots

log = logging.getLogger(__name__)


@dataclass
class Pool:
    name: str
    handles: list[ActorHandle | None]  # by slot; a retired slot keeps its last handle (None: never started)
    minimum: int = 1
    slots: Slots | None = None  # None: slots never come back (a pool built from given actors)
    make: Callable[[int], ActorHandle] | None = None  # a fresh worker for slot i, in its bundle
    namespace: str = ""
    nodes: list[str] = field(default_factory=list)  # by slot: the node its worker runs on (empty: untracked)
    retired: set[int] = field(default_factory=set)
    killed: set[int] = field(default_factory=set)  # retired slots whose worker was killed (or never started)
    unstarted: set[int] = field(default_factory=set)  # slots whose first worker is still to come
    restarts: int = 0  # workers started in a slot whose worker was lost

    @classmethod
    def placed(cls, name: str, slots: Slots, minimum: int, make: Callable[[int], ActorHandle],
               namespace: str) -> Pool:
        """A pool with a worker in every slot Ray has placed; the others start as it places them."""
        nodes = slots.nodes()
        n = len(slots.slots)
        waiting = {i for i in range(n) if i not in nodes}
        return cls(name, [None if i in waiting else make(i) for i in range(n)], minimum, slots, make, namespace,
                   [nodes.get(i, "") for i in range(n)], retired=set(waiting), killed=set(waiting),
                   unstarted=waiting)

    @property
    def target(self) -> int:
        return len(self.handles)

    @property
    def active(self) -> list[int]:
        return [i for i in range(self.target) if i not in self.retired]

    def retire_unusable(self, watch: ClusterWatch) -> list[int]:
        """Retire every active worker whose node is draining or gone; those slots."""
        if not self.nodes:  # built from given actors: where they run is not tracked
            return []
        gone = [i for i in self.active if not watch.usable(self.nodes[i])]
        for i in gone:
            state = "draining" if self.nodes[i] in watch.draining else "gone"
            log.warning("%s-%d: its node %s is %s; it takes no new work (%d of %d %s workers left)", self.name, i,
                        self.nodes[i][:8], state, len(self.active) - 1, self.target, self.name)
            self.retired.add(i)
        return gone

    def release(self, busy: set[int]) -> None:
        """Kill the retired workers that hold no work (`busy`: slots with a call in flight)."""
        for i in sorted(self.retired - self.killed - busy):
            ray.kill(self.handles[i], no_restart=True)
            self.killed.add(i)

    def refill(self, watch: ClusterWatch) -> list[int]:
        """Start a fresh worker in every released slot whose bundle Ray placed again on a usable
        node; those slots (the caller syncs their weights before their first work)."""
        if self.slots is None or self.make is None or not self.killed:
            return []
        placed = self.slots.nodes()
        back = [i for i in sorted(self.killed) if watch.usable(placed.get(i, ""))]
        for i in back:
            wait_name_free(f"{self.name}-{i}", self.namespace)
            self.handles[i] = self.make(i)
            self.nodes[i] = placed[i]
            self.retired.discard(i)
            self.killed.discard(i)
            self.restarts += 1 if i not in self.unstarted else 0
            self.unstarted.discard(i)
            log.info("%s-%d started on node %s (%d of %d %s workers)", self.name, i, self.nodes[i][:8],
                     len(self.active), self.target, self.name)
        return back

    def next_active(self, turn: int) -> int:
        """The active slot at position `turn` of a round robin over the active ones."""
        active = self.active
        return active[turn % len(active)]

    def metrics(self) -> dict[str, Any]:
        return {f"pool/{self.name}/size": float(len(self.active)), f"pool/{self.name}/target": float(self.target)}


class Roster(Protocol):
    """Who keeps the rollout workers' weights (weights_source.Weights): told who leaves and joins."""
    def retire(self, worker: int) -> None: ...

    def add(self, worker: int) -> None: ...


class Pools:
    """The run's pools (rollout, reward, judge) following the cluster the watch sees. `calls`
    arguments: (pool, slot) of each call still in flight, whose worker must not be killed yet."""

    def __init__(self, pools: dict[str, Pool], watch: ClusterWatch, weights: Roster) -> None:
        self.pools, self.watch, self.weights = pools, watch, weights

    def __getitem__(self, name: str) -> Pool:
        return self.pools[name]

    def retire_unusable(self, watch: ClusterWatch) -> None:
        for name, pool in self.pools.items():
            for i in pool.retire_unusable(watch):
                if name == "rollout":
                    self.weights.retire(i)

    def replace_released(self, calls: list[tuple[str, int]]) -> None:
        for name, pool in self.pools.items():
            pool.release({slot for owner, slot in calls if owner == name})
            for i in pool.refill(self.watch):
                if name == "rollout":
                    self.weights.add(i)

    def short(self) -> list[str]:
        """The pools below their minimum, described."""
        return [f"{p.name} {len(p.active)}/{p.target} (cluster.{p.name}.min_workers={p.minimum})"
                for p in self.pools.values() if p.target and len(p.active) < p.minimum]

    def refresh(self, calls: list[tuple[str, int]]) -> None:
        """Retire workers whose node is draining or gone, kill the idle retired ones, start workers in
        slots Ray placed again on usable nodes (their weights given before any work), and wait while
        a pool is below its minimum."""
        self.retire_unusable(self.watch.poll())
        self.replace_released(calls)
        if self.short():
            self.await_capacity(calls)

    def await_capacity(self, calls: list[tuple[str, int]], timeout_s: float = 3600.0, every_s: float = 2.0) -> None:
        """Wait until every pool has its `min_workers` again, saying which pools are short."""
        log.warning("pools below their minimum: %s; waiting up to %.0f s for nodes to come back",
                    ", ".join(self.short()), timeout_s)

        def ready() -> bool:
            self.retire_unusable(self.watch.poll())
            self.replace_released(calls)
            return not self.short()
        poll(ready, timeout_s, f"pools stayed below their minimum ({', '.join(self.short())})", every_s)

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pool in self.pools.values():
            out |= pool.metrics()
        return out | {"pool/restarts": float(sum(p.restarts for p in self.pools.values()))}
