"""What the driver knows about the cluster's nodes (docs/design.md §8.6): which are alive, which are
draining (a preemption warning: Ray marks a node about to be reclaimed, with a deadline), and the
run's figures about them. Polled at phase and step boundaries, never by a thread of its own: one
GCS query for the node table and one for the draining nodes, so a poll costs the same at any pool size.

Also where a step's trajectory batches are checked before the learners read them: a batch whose
node died is lost (the driver owns its ref, but the bytes were on that node), one only on a
draining node is about to be; both are regenerated (actors/rollout_group.py).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import ray

log = logging.getLogger(__name__)


@dataclass
class ClusterWatch:
    alive: set[str] = field(default_factory=set)  # node ids (hex)
    draining: dict[str, float] = field(default_factory=dict)  # node id -> deadline (unix s; 0: none given)
    totals: dict[str, dict[str, float]] = field(default_factory=dict)  # alive node id -> its resources
    warned: set[str] = field(default_factory=set)  # every node ever seen draining
    preemptions: int = 0  # nodes that were announced draining during the run
    nodes_lost: int = 0  # nodes that died (with or without a warning)
    steps_lost: int = 0  # training steps replayed after losing learner ranks to a node
    regenerated: int = 0  # trajectory batches decoded again after their node was lost or drained
    seen: bool = False  # polled at least once
    polled_at: float = float("-inf")  # time.monotonic() of the last poll

    def poll(self) -> ClusterWatch:
        """Refresh from the GCS; logs nodes that start draining or die."""
        nodes = ray.nodes()
        alive = {n["NodeID"] for n in nodes if n["Alive"]}
        self.totals = {n["NodeID"]: dict(n["Resources"]) for n in nodes if n["Alive"]}
        draining = {node: ms / 1000.0 for node, ms in ray._private.state.state.get_draining_nodes().items()}
        for node in set(draining) - self.warned:
            left = f"{draining[node] - time.time():.0f} s left" if draining[node] else "no deadline"
            log.warning("node %s is draining (preemption warning, %s): no new work goes there", node[:8], left)
            self.preemptions += 1
        self.warned |= set(draining)
        if self.seen:
            for node in self.alive - alive:
                log.warning("node %s is gone", node[:8])
                self.nodes_lost += 1
        self.alive, self.draining, self.seen, self.polled_at = alive, draining, True, time.monotonic()
        return self

    def usable(self, node: str) -> bool:
        """Alive and not draining: a place for new work."""
        return node in self.alive and node not in self.draining

    def fits_anywhere(self, bundle: dict[str, float]) -> bool:
        """Some usable node has the resources for `bundle` (free or not)."""
        return any(all(total.get(k, 0.0) >= v for k, v in bundle.items() if v)
                   for node, total in self.totals.items() if self.usable(node))

    def maybe_poll(self, every_s: float = 1.0) -> ClusterWatch:
        """Poll unless the last poll is younger than `every_s` (calls inside a step's collect loop)."""
        if time.monotonic() - self.polled_at >= every_s:
            self.poll()
        return self

    def stranded(self, stored: dict[Any, list[str]]) -> set[Any]:
        """The objects among `stored` (each with the nodes it was on when it came back) none of whose
        nodes is usable any more: lost with their node, or only on a draining one. Where Ray says the
        object is now is no help: while it tries to recover a lost object it may name a node that
        holds none. An object kept inline in this process never had a node and is never stranded."""
        return {ref for ref, nodes in stored.items() if nodes and not any(self.usable(n) for n in nodes)}

    def metrics(self) -> dict[str, float]:
        return {"cluster/draining_nodes": float(len(self.draining)), "cluster/preemptions": float(self.preemptions),
                "cluster/nodes_lost": float(self.nodes_lost), "cluster/steps_lost": float(self.steps_lost),
                "cluster/batches_regenerated": float(self.regenerated)}


def stored_on(refs: list[Any]) -> dict[Any, list[str]]:
    """The nodes holding each object now (empty: kept inline in this process, or lost)."""
    where = ray.experimental.get_object_locations(refs) if refs else {}
    return {ref: list(where[ref]["node_ids"]) for ref in refs}
