"""Where actors run: each pool's placement group (one bundle per worker; PACK within a node, SPREAD
across nodes, as `cluster.<pool>.strategy` says) and the options every actor is created with.

Names are stable (`rollout-0`, `reward-0`, `judge-0`, `learner-1`, ...) inside a per-run namespace,
so the dashboard shows who is who and two runs on one cluster never collide.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from .config import ClusterSection, PoolSection, RunConfig


@dataclass
class Placements:
    """The run's placement groups; the rollout workers use the learners' when colocated."""
    rollout: PlacementGroup
    reward: PlacementGroup
    learner: PlacementGroup | None = None
    judge: PlacementGroup | None = None
    colocated: bool = False

    def remove(self) -> None:
        for pg in (self.learner, None if self.colocated else self.rollout, self.reward, self.judge):
            if pg is not None:
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
    rollout = learner if colocate else _group(c, "rollout", namespace)
    return Placements(rollout, _group(c, "reward", namespace), learner,
                      _group(c, "judge", namespace) if judges else None, colocate)


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
    room = sum(min(int(n.get(k, 0.0) // v) for k, v in one.items() if v) for n in hosts) if hosts else 0
    need = pool.num_workers
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
    return (f"{key}: {need} worker(s) of {one} can never be placed: {problem}. The cluster's nodes have {have}. "
            f"Lower {key}.num_workers or the per-worker resources, or add nodes")


def _group(cluster: ClusterSection, name: str, namespace: str, extra: PoolSection | None = None,
           timeout_s: float = 120.0) -> PlacementGroup:
    pool, key, one = getattr(cluster, name), f"cluster.{name}", bundle(getattr(cluster, name), extra)
    pg = placement_group([one] * pool.num_workers, strategy=pool.strategy, name=f"{namespace}-{name}")
    ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
    if not ready:
        raise RuntimeError(f"{key} ({pool.num_workers} x {one}, {pool.strategy}) was not placed within "
                           f"{timeout_s:.0f} s: the cluster has {ray.cluster_resources()}, of which "
                           f"{ray.available_resources()} free")
    return pg
