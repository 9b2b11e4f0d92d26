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

from .config import PoolSection, RunConfig


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
    learner = _group(c.learner, f"{namespace}-learner", c.rollout if colocate else None) if learners else None
    rollout = learner if colocate else _group(c.rollout, f"{namespace}-rollout")
    return Placements(rollout, _group(c.reward, f"{namespace}-reward"), learner,
                      _group(c.judge, f"{namespace}-judge") if judges else None, colocate)


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


def _bundle(pool: PoolSection, extra: PoolSection | None = None) -> dict[str, float]:
    cpus = pool.cpus_per_worker + (extra.cpus_per_worker if extra else 0.0)
    gpus = max(pool.gpus_per_worker, extra.gpus_per_worker if extra else 0.0)
    resources = {**pool.resources, **(extra.resources if extra else {})}
    return {"CPU": cpus, **({"GPU": gpus} if gpus else {}), **resources}


def _group(pool: PoolSection, name: str, extra: PoolSection | None = None, timeout_s: float = 120.0) -> PlacementGroup:
    pg = placement_group([_bundle(pool, extra)] * pool.num_workers, strategy=pool.strategy, name=name)
    ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
    if not ready:
        raise RuntimeError(
            f"placement group {name} ({pool.num_workers} x {_bundle(pool, extra)}, {pool.strategy}) "
            f"cannot be placed: cluster has {ray.cluster_resources()}"
        )
    return pg
