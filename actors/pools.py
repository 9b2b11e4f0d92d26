"""The actor pools, each in its own placement group: creating, probing and replacing their actors.

Weight sync between the pools is `actors/sync.py`.

Names are stable (`rollout-0`, `reward-0`, `learner-1`, ...) inside a per-run namespace, so the
dashboard shows who is who and two runs on one cluster never collide.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayActorError
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from .config import PoolSection, RunConfig
from .judge_worker import JudgeWorker
from .learner_worker import LearnerWorker
from .reward_worker import RewardWorker
from .rollout_worker import RolloutWorker
from .sync import choose_transports
from .weight_sync.buckets import WeightsHandle


@dataclass
class Pools:
    learner: list[ActorHandle]
    rollout: list[ActorHandle]
    reward: list[ActorHandle]
    groups: list[PlacementGroup]
    transport: list[str] = field(default_factory=list)  # weight-sync transport per rollout worker (planner names)
    collective_stale: bool = True  # the broadcast groups (gloo, NCCL) must be (re)formed before the next one
    handles: dict[str, WeightsHandle] = field(default_factory=dict)  # the last sync's (keeps objects alive)
    weights_version: int = 0  # what the last sync of every rollout worker loaded
    learner_group: PlacementGroup | None = None  # the learners' bundles, reused when the group is recreated
    judge: list[ActorHandle] = field(default_factory=list)  # only when a reward uses a judge

    def shutdown(self) -> None:
        try:
            ray.get([a.close.remote() for a in self.learner[:1]])
        except RayActorError:  # rank 0 died (a run stopping on a lost learner group): nothing to close
            pass
        for actor in self.learner + self.rollout + self.reward + self.judge:
            ray.kill(actor)
        for pg in self.groups:
            remove_placement_group(pg)


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


def _options(
    pool: PoolSection,
    name: str,
    namespace: str,
    pg: PlacementGroup,
    index: int,
    gpu_share: float = 1.0,
    restartable: bool = False,
) -> dict[str, Any]:
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


def create_pools(
    cfg: RunConfig, model_path: str, reward: str, namespace: str, warmup: bool = False, learners: bool = True
) -> Pools:
    """The three pools; no learner pool when only evaluating (`learners=False`)."""
    c = cfg.cluster
    colocate = c.colocate and learners
    learner_pg = _group(c.learner, f"{namespace}-learner", c.rollout if colocate else None) if learners else None
    rollout_pg = learner_pg if colocate else _group(c.rollout, f"{namespace}-rollout")
    reward_pg = _group(c.reward, f"{namespace}-reward")
    share = 0.5 if colocate else 1.0  # colocated: learner and rollout split the bundle's GPU
    Rollout, Reward = ray.remote(RolloutWorker), ray.remote(RewardWorker)
    ranks, setup = start_learners(cfg, model_path, namespace, learner_pg, warmup) if learners else ([], [])
    rollouts = [
        Rollout.options(**_options(c.rollout, f"rollout-{i}", namespace, rollout_pg, i, share, True)).remote(
            i, cfg.model, model_path, _threads(c.rollout)
        )
        for i in range(c.rollout.num_workers)
    ]
    rewards = [
        Reward.options(**_options(c.reward, f"reward-{i}", namespace, reward_pg, i, restartable=True)).remote(
            i, model_path, reward, timeout_s=cfg.reward.timeout_s
        )
        for i in range(c.reward.num_workers)
    ]
    judge_pg = _group(c.judge, f"{namespace}-judge") if cfg.reward.uses_judge and learners else None
    judges = [
        ray.remote(JudgeWorker)
        .options(**_options(c.judge, f"judge-{i}", namespace, judge_pg, i, restartable=True))
        .remote(i, cfg.judge, model_path, c.judge.gpus_per_worker, _threads(c.judge))
        for i in range(c.judge.num_workers if judge_pg else 0)
    ]
    ray.get(setup)
    groups = [pg for pg in (learner_pg, None if colocate else rollout_pg, reward_pg, judge_pg) if pg is not None]
    pools = Pools(ranks, rollouts, rewards, groups, learner_group=learner_pg, judge=judges)
    if learners:
        pools.transport = choose_transports(pools, cfg.weight_sync.transport)
    return pools


def start_learners(
    cfg: RunConfig, model_path: str, namespace: str, pg: PlacementGroup, warmup: bool
) -> tuple[list[ActorHandle], list[ray.ObjectRef]]:
    """Every learner rank, rank 0 first (it picks the process group's address); returns the ranks
    and their pending `setup` calls (the group forms once all have joined)."""
    c = cfg.cluster
    share = 0.5 if c.colocate else 1.0
    world = c.learner.num_workers
    Learner = ray.remote(LearnerWorker)

    def learner(rank: int) -> ActorHandle:
        opts = _options(c.learner, f"learner-{rank}", namespace, pg, rank, share)
        return Learner.options(**opts).remote(rank, world, cfg, model_path, namespace, _threads(c.learner))

    ranks = [learner(0)]
    addr, port = ray.get(ranks[0].address.remote())
    ranks += [learner(r) for r in range(1, world)]
    return ranks, [a.setup.remote(addr, port, warmup) for a in ranks]


def dead_learners(pools: Pools, timeout_s: float = 30.0) -> list[int]:
    """Ranks whose actor has died. A live rank answers at once unless it is stuck in a collective
    with a dead peer, so the probe stops at the first dead rank it finds (or after `timeout_s`)."""
    probes = {a.node_id.remote(): rank for rank, a in enumerate(pools.learner)}
    dead: list[int] = []
    deadline = time.monotonic() + timeout_s
    while probes and not dead and time.monotonic() < deadline:
        ready, _ = ray.wait(list(probes), num_returns=1, timeout=max(deadline - time.monotonic(), 0.0))
        for ref in ready:
            rank = probes.pop(ref)
            try:
                ray.get(ref)
            except RayActorError:
                dead.append(rank)
    return dead


def replace_learners(pools: Pools, cfg: RunConfig, model_path: str, namespace: str) -> None:
    """Kill every learner rank (the survivors' process group is broken) and start a fresh group
    from `model_path` in the same bundles, its rank 0 first. The caller restores its state."""
    old = pools.learner
    for actor in old:
        ray.kill(actor, no_restart=True)
    for rank in range(len(old)):  # a killed actor's name is released asynchronously
        _wait_name_free(f"learner-{rank}", namespace)
    ranks, setup = start_learners(cfg, model_path, namespace, pools.learner_group, warmup=False)
    ray.get(setup)
    pools.learner = ranks
    pools.transport = choose_transports(pools, cfg.weight_sync.transport)
    pools.collective_stale = True  # the weight-sync groups' host (rank 0) is a new process
    pools.handles = {}


def _wait_name_free(name: str, namespace: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name, namespace=namespace)
        except ValueError:
            return
        time.sleep(0.1)
    raise TimeoutError(f"actor {namespace}/{name} still registered {timeout_s:.0f} s after it was killed")


def _threads(pool: PoolSection) -> int:
    return max(1, int(pool.cpus_per_worker))
