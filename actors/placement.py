"""Where actors run: each pool's placement groups and the options every actor is created with.

The learner group has one placement group (one bundle per rank; PACK within a node, SPREAD across
nodes, as `cluster.learner.strategy` says): all or nothing. An elastic pool (rollout, reward, judge)
can start below its target: its first `min_workers` slots (without min_workers: all of them) share
one placement group with the pool's strategy, and each slot past them has a one-bundle group of its
own, which Ray places whenever there is room (a node joins), not all at once with the others.

Names are stable (`rollout-0`, `reward-0`, `judge-0`, `learner-1`, ...) inside a per-run namespace,
so the dashboard shows who is who and two runs on one cluster never collide.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from .config import ClusterSection, PoolSection, RunConfig

log = logging.getLogger(__name__)


@dataclass
class Slots:
    """Where a pool's workers go: slot i's (placement group, bundle index)."""
    slots: list[tuple[PlacementGroup, int]]

    @property
    def groups(self) -> list[PlacementGroup]:
        return list({pg.id: pg for pg, _ in self.slots}.values())

    def nodes(self) -> dict[int, str]:
        """Where each slot's bundle is placed now (node id; one not placed yet, or being placed
        again after its node went, is missing). One GCS query, whatever the pool's size."""
        table = placement_group_table()
        placed = {pg_id: {int(b): node for b, node in info.get("bundles_to_node_id", {}).items() if node}
                  for pg_id, info in table.items()}
        return {i: placed[pg.id.hex()][b] for i, (pg, b) in enumerate(self.slots) if b in placed.get(pg.id.hex(), {})}


@dataclass
class Placements:
    """The run's placement groups; the rollout workers use the learners' bundles when colocated."""
    rollout: Slots
    reward: Slots
    learner: PlacementGroup | None = None
    judge: Slots | None = None
    colocated: bool = False

    def remove(self) -> None:
        pools = [self.reward, self.judge] + ([] if self.colocated else [self.rollout])
        for pg in ([self.learner] if self.learner else []) + [g for p in pools if p for g in p.groups]:
            remove_placement_group(pg)


def reserve(cfg: RunConfig, namespace: str, learners: bool, judges: bool) -> Placements:
    """A placement group per pool the run has; the learners' bundles hold a rollout worker too when
    colocated."""
    c = cfg.cluster
    colocate = c.colocate and learners
    pools = {"learner": learners, "rollout": not colocate, "reward": True, "judge": judges}
    nodes = [dict(n["Resources"]) for n in ray.nodes() if n["Alive"]]
    for name in (name for name, wanted in pools.items() if wanted):  # all checked before any is reserved
        extra = c.rollout if name == "learner" and colocate else None
        problem = unplaceable(f"cluster.{name}", getattr(c, name), bundle(getattr(c, name), extra), nodes)
        if problem:
            raise RuntimeError(problem)
    learner = _group(c, "learner", namespace, c.rollout if colocate else None) if learners else None
    rollout = (Slots([(learner, i) for i in range(c.rollout.num_workers)]) if colocate
               else _slots(c, "rollout", namespace, nodes))
    return Placements(rollout, _slots(c, "reward", namespace, nodes), learner,
                      _slots(c, "judge", namespace, nodes) if judges else None, colocate)


def actor_options(pool: PoolSection, name: str, namespace: str, pg: PlacementGroup, index: int,
                  gpu_share: float = 1.0, restartable: bool = False) -> dict[str, Any]:
    opts: dict[str, Any] = dict(
        name=name,
        namespace=namespace,
        num_cpus=pool.cpus_per_worker,
        num_gpus=pool.gpus_per_worker * gpu_share,
        resources=dict(pool.resources),
        scheduling_strategy=PlacementGroupSchedulingStrategy(pg, index),
    )
    if restartable:  # the driver re-issues lost work itself, after re-syncing weights: no task retries
        opts.update(max_restarts=pool.max_restarts, max_task_retries=0)
    return opts


def gpu_share(colocated: bool) -> float:
    """Colocated, a learner rank and a rollout worker split their bundle's GPU."""
    return 0.5 if colocated else 1.0


def threads(pool: PoolSection) -> int:
    return max(1, int(pool.cpus_per_worker))


def bundle(pool: PoolSection, extra: PoolSection | None = None) -> dict[str, float]:
    """One worker's bundle (colocated: with the rollout worker that shares it)."""
    cpus = pool.cpus_per_worker + (extra.cpus_per_worker if extra else 0.0)
    gpus = max(pool.gpus_per_worker, extra.gpus_per_worker if extra else 0.0)
    resources = {**pool.resources, **(extra.resources if extra else {})}
    return {"CPU": cpus, **({"GPU": gpus} if gpus else {}), **resources}


def unplaceable(key: str, pool: PoolSection, one: dict[str, float], nodes: list[dict[str, float]]) -> str | None:
    """Why `pool`'s bundles can never be placed on nodes with these total resources (None: they
    can, once the resources are free): an error naming the config key and what the cluster has."""
    def fits(node: dict[str, float], times: int = 1) -> bool:
        return all(node.get(k, 0.0) >= v * times for k, v in one.items() if v)

    hosts = [n for n in nodes if fits(n)]
    room = capacity(one, nodes)
    need = grouped(pool)  # the rest of an elastic pool comes as nodes join
    if not hosts:
        problem = "no node has the resources of one worker"
    elif pool.strategy == "STRICT_PACK" and not any(fits(n, need) for n in nodes):
        problem = f"no node has room for all {need} workers (strategy STRICT_PACK)"
    elif pool.strategy == "STRICT_SPREAD" and len(hosts) < need:
        problem = f"only {len(hosts)} node(s) can hold a worker (strategy STRICT_SPREAD needs {need})"
    elif room < need:
        problem = f"the cluster has room for {room} workers"
    else:
        return None
    have = "; ".join(f"node {i}: {n}" for i, n in enumerate(nodes))
    fewer = f"{key}.min_workers" if pool.min_workers else f"{key}.num_workers"
    return (f"{key}: {need} worker(s) of {one} can never be placed: {problem}. The cluster's nodes have {have}. "
            f"Lower {fewer} or the per-worker resources, or add nodes")


def grouped(pool: PoolSection) -> int:
    """How many of the pool's workers share its all-or-nothing placement group (the run waits for them)."""
    return pool.min_workers or pool.num_workers


def capacity(one: dict[str, float], nodes: list[dict[str, float]]) -> int:
    """How many bundles like `one` the nodes hold in all (their total resources)."""
    return sum(min(int(n.get(k, 0.0) // v) for k, v in one.items() if v) for n in nodes
               if all(n.get(k, 0.0) >= v for k, v in one.items() if v))


def _group(cluster: ClusterSection, name: str, namespace: str, extra: PoolSection | None = None,
           timeout_s: float = 120.0) -> PlacementGroup:
    """The pool's placement group of its first `grouped` workers, placed (all or nothing)."""
    pool, key, one = getattr(cluster, name), f"cluster.{name}", bundle(getattr(cluster, name), extra)
    n = pool.num_workers if name == "learner" else grouped(pool)
    pg = placement_group([one] * n, strategy=pool.strategy, name=f"{namespace}-{name}")
    ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
    if not ready:
        raise RuntimeError(f"{key} ({n} x {one}, {pool.strategy}) was not placed within "
                           f"{timeout_s:.0f} s: the cluster has {ray.cluster_resources()}, of which "
                           f"{ray.available_resources()} free")
    return pg


def _slots(cluster: ClusterSection, name: str, namespace: str, nodes: list[dict[str, float]],
           timeout_s: float = 120.0) -> Slots:
    """An elastic pool's slots: its placement group, then a one-bundle group per further slot. The
    run waits for those too when the cluster's nodes could hold the whole target (they are then
    only being placed); otherwise it starts without them and they start as nodes join."""
    pool, one = getattr(cluster, name), bundle(getattr(cluster, name))
    base = _group(cluster, name, namespace, timeout_s=timeout_s)
    own = [placement_group([one], strategy=pool.strategy, name=f"{namespace}-{name}-{i}")
           for i in range(grouped(pool), pool.num_workers)]
    if own:
        fits = capacity(one, nodes) >= pool.num_workers
        ready, _ = ray.wait([pg.ready() for pg in own], num_returns=len(own), timeout=timeout_s if fits else 0)
        if len(ready) < len(own):
            log.warning("cluster.%s: %d of its %d workers placed; the others start as nodes join (the cluster's "
                        "nodes have room for %d)", name, grouped(pool) + len(ready), pool.num_workers,
                        capacity(one, nodes))
    return Slots([(base, i) for i in range(grouped(pool))] + [(pg, 0) for pg in own])
