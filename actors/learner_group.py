"""The learner side of a run (docs/design.md §8.1-8.6): the learner ranks — one torch.distributed
rank each, rank 0 created first — sharding a step's rows over them, the update, publishing their
weights to the rollout group, checkpoints, and recovering from a dead rank.

Recovery: when a step raised and a rank has died, the whole group is torn down (the survivors'
process group is broken), recreated rank 0 first in the same bundles, and restored from the run's
latest complete checkpoint (the caller rolls its own state back with it, or, before the first
checkpoint, to where training began); the rollout workers are re-synced by the next step. CPU
runs are deterministic, so the replayed steps log what the lost ones would have.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import GetTimeoutError, ObjectLostError, RayActorError, RayError
from ray.util.placement_group import PlacementGroup
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from learner.advantages import AdvantageResult

from .checkpoint import DRIVER_STATE, check_resumable, load_checkpoint, save_best, save_checkpoint
from .config import RunConfig
from .hooks import RunHooks
from .learner_worker import LearnerWorker
from .liveness import wait_name_free
from .placement import actor_options, gpu_share, threads
from .rollout_group import RolloutGroup
from .step_metrics import learner_metrics, update_metrics
from .timer import StepTimer
from .weight_sync.buckets import Sealed
from .weight_sync.publisher import WeightPublisher
from .weight_sync.shared_memory import remove_slots

log = logging.getLogger(__name__)


class LearnerGroupLost(RuntimeError):
    """Learner ranks died more often than trainer.max_learner_restarts allows."""


class LearnerGroup:
    def __init__(self, cfg: RunConfig, namespace: str, placement: PlacementGroup, base_path: str,
                 warmup: bool = False, hooks: RunHooks | None = None) -> None:
        """Start every rank (their process group forms in the background until `connect`)."""
        self.cfg, self.namespace, self.placement, self.hooks = cfg, namespace, placement, hooks or RunHooks()
        self.base_path = base_path  # what the ranks are built from: model.path, or the warm start once it exists
        self.version = 0  # policy updates applied
        self.restarts = 0  # times the group was recreated after a rank died
        self.restore_point: Path | None = None  # the last complete checkpoint written or resumed from
        self.nodes: list[str] = []  # each rank's node, once connected
        self.ranks, self._setup = self._start(warmup)

    def _start(self, warmup: bool) -> tuple[list[ActorHandle], list[ray.ObjectRef]]:
        """Every rank, rank 0 first (it picks the process group's address); their `setup` calls."""
        c = self.cfg.cluster
        world = c.learner.num_workers
        Learner = ray.remote(LearnerWorker)

        def rank(r: int) -> ActorHandle:
            opts = actor_options(c.learner, f"learner-{r}", self.namespace, self.placement, r, gpu_share(c.colocate))
            return Learner.options(**opts).remote(r, world, self.cfg, self.base_path, self.namespace,
                                                  threads(c.learner))

        ranks = [rank(0)]
        addr, port = ray.get(ranks[0].address.remote())
        ranks += [rank(r) for r in range(1, world)]
        return ranks, [a.setup.remote(addr, port, warmup) for a in ranks]

    def connect(self, rollout: RolloutGroup) -> None:
        """Wait for the process group, then plan each rollout worker's weight transport."""
        ray.get(self._setup)
        self.rollout = rollout
        self.publisher = WeightPublisher(self.ranks, rollout.workers, self.cfg.weight_sync.transport,
                                         rollout.pools["rollout"].retired, rollout.left_pool)
        self.nodes = ray.get([a.node_id.remote() for a in self.ranks])  # where each rank runs

    # ---- the rollout workers' weights (weights_source.Weights) ---------------------------------
    @property
    def held(self) -> int:
        return self.publisher.held

    def publish(self, timer: StepTimer) -> None:
        """Bring every rollout worker to this version (nothing when they hold it). The rollout workers
        decode next, so a colocated learner then parks its state in host memory."""
        if self.publisher.held != self.version:
            self.hooks.weights_publishing()
            timer.add("sync_s", self.publisher.publish(self.version))
        if self.cfg.cluster.colocate:
            with timer("offload_s"):
                ray.get([a.offload.remote() for a in self.ranks])

    def resync(self, worker: int) -> None:
        self.publisher.resync(worker)

    def take_sent_bytes(self) -> int:
        return self.publisher.take_sent_bytes()

    def retire(self, worker: int) -> None:
        self.publisher.retire(worker)

    def add(self, worker: int) -> None:
        """A fresh rollout worker gets the version the others hold when that is the learners' own
        (else the publish that follows brings every worker to it)."""
        self.publisher.add(worker, sync=self.publisher.held == self.version)

    def binding(self, worker: int) -> Sealed | None:
        return self.publisher.binding(worker)

    def forget_weights(self) -> None:
        """The rollout workers' weights are unknown (a restore): the next publish syncs them all."""
        self.publisher.held = -1

    # ---- updates ---------------------------------------------------------------------------------
    def train(self, adv: AdvantageResult, step: int, timer: StepTimer) -> dict[str, float]:
        """Every rank fetches its shard of the rows and updates on them; rank 0's figures are global."""
        if adv.skip_reason:
            log.warning("step %d: no update, %s", step + 1, adv.skip_reason)
            return {}
        freed = self._free_for_update(timer)
        with timer("update_s"):
            shards = learner_shards(adv, len(self.ranks))
            self.hooks.update_starting()
            stats = ray.get([a.rl_step.remote(s.samples, s.advantages, s.process_rewards, step, adv.filtered)
                             for a, s in zip(self.ranks, shards)])[0]
        self.version += 1
        return {**freed, **update_metrics(stats, adv.samples, timer.seconds["update_s"])}

    def train_supervised(self, pairs: list[tuple[list[int], list[int]]], step: int,
                         timer: StepTimer) -> dict[str, float]:
        """One supervised step, rank r on pairs[r::ranks] (the rollout workers catch up at the next publish)."""
        freed = self._free_for_update(timer)
        with timer("update_s"):
            n = len(self.ranks)
            stats = ray.get([a.sft_step.remote(pairs[r::n], step) for r, a in enumerate(self.ranks)])[0]
        self.version += 1
        return {**learner_metrics(stats), **freed}

    def _free_for_update(self, timer: StepTimer) -> dict[str, float]:
        """Colocated: the rollout workers release their weights (the next publish brings them back)."""
        if not self.cfg.cluster.colocate:
            return {}
        with timer("sleep_s"):
            return {"rollout_freed_mb": self.rollout.sleep() / 2**20}

    def finish_warmup(self, warm_dir: Path) -> None:
        """Cache the warm start (written under a temporary name, then renamed: a crash leaves no half
        entry), then rebuild every rank from it with the RL optimizer."""
        tmp = warm_dir.with_name(warm_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        ray.get([a.export_hf.remote(str(tmp)) for a in self.ranks])
        tmp.rename(warm_dir)
        ray.get([a.start_rl.remote(str(warm_dir)) for a in self.ranks])
        self.base_path = str(warm_dir)  # a recreated group starts from here

    # ---- checkpoints and recovery --------------------------------------------------------------
    def checkpoint(self, run_dir: Path, step: int, driver_state: dict[str, Any]) -> Path:
        """Save a checkpoint and make it the point a recovery restores."""
        self.restore_point = save_checkpoint(self.ranks, run_dir, step, driver_state, self.cfg.trainer.keep_last)
        return self.restore_point

    def save_best(self, run_dir: Path, step: int, accuracy: float) -> Path:
        """Export the policy as the run's best (checkpoints/best/hf; keep_last never prunes it)."""
        return save_best(self.ranks, run_dir, step, accuracy)

    def resume(self, path: Path) -> dict[str, Any]:
        """Load a checkpoint into the ranks; its driver state."""
        check_resumable(path, self.cfg.model_dump(mode="json", by_alias=True))
        self.restore_point = path
        return load_checkpoint(self.ranks, path)

    def recover(self, err: BaseException, step: int, start: dict[str, Any]) -> dict[str, Any] | None:
        """After `err` ended step `step` (0-based): None if every rank is alive and no batch an update
        read was lost (not ours to handle); else the group recreated and restored, and the driver
        state to go back to — the restore point's, or `start` (where training began) before the
        first checkpoint. A batch lost with its node during the update leaves the ranks half way
        through a step (a peer may wait in a collective), so it is handled like a dead rank. Raises
        LearnerGroupLost past trainer.max_learner_restarts."""
        lost = isinstance(err, ObjectLostError)  # ray.get raises a task's error as an instance of its cause
        dead = [] if lost else dead_ranks(self.ranks)
        if not dead and not lost:
            return None
        what = f"rank(s) {dead} died" if dead else "a batch an update read was lost with its node"
        limit = self.cfg.trainer.max_learner_restarts
        if self.restarts >= limit:
            where = (f"{self.restore_point} (step {_step_of(self.restore_point)})" if self.restore_point
                     else "the start (no checkpoint was written yet)")
            raise LearnerGroupLost(
                f"learner {what} at step {step + 1} after {self.restarts} restart(s) "
                f"(trainer.max_learner_restarts={limit}); the run stops here. Run it again with "
                f"trainer.resume=auto to continue from {where}") from err
        self.restarts += 1
        log.warning("learner %s during step %d (%s: %s); restart %d/%d from %s", what, step + 1,
                    type(err).__name__, err, self.restarts, limit, self.restore_point or "the start")
        self.rollout.pools.retire_unusable(self.rollout.watch.poll())  # no transport planned for a lost node's worker
        self._replace()
        return load_checkpoint(self.ranks, self.restore_point) if self.restore_point else start

    def _replace(self) -> None:
        """Kill every rank (the survivors' process group is broken) and start a fresh group from
        `base_path` in the same bundles, with freshly planned weight transports."""
        for actor in self.ranks:
            ray.kill(actor, no_restart=True)
        for rank in range(len(self.ranks)):  # a killed actor's name is released asynchronously
            wait_name_free(f"learner-{rank}", self.namespace)
        self.ranks, self._setup = self._start(warmup=False)
        self.connect(self.rollout)

    def _remove_slots(self) -> None:
        """Unlink the shared-memory slot files a dead rank 0 left on its node (a task pinned there)."""
        task = ray.remote(remove_slots).options(
            num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(self.nodes[0], soft=False))
        try:
            ray.get(task.remote(self.namespace), timeout=60)
        except (RayError, GetTimeoutError) as err:  # the node is gone, and its files with it
            log.info("rank 0's shared-memory slots were not removed: %s", type(err).__name__)

    def shutdown(self) -> None:
        try:
            ray.get([a.close.remote() for a in self.ranks[:1]])
        except RayActorError:  # rank 0 died (a run stopping on a lost learner group): its slots are left
            if self.nodes:
                self._remove_slots()
        for actor in self.ranks:
            ray.kill(actor)


def learner_shards(adv: AdvantageResult, n: int) -> list[AdvantageResult]:
    """Each rank's rows with their advantages (and process scores), longest first, round robin:
    ranks get similar token counts (the updater pads batch counts)."""
    order = sorted(range(len(adv.samples)), key=lambda i: -(adv.samples[i].prompt_len + adv.samples[i].response_len))
    process = adv.process_rewards
    shards = [AdvantageResult(process_rewards=None if process is None else []) for _ in range(n)]
    for j, i in enumerate(order):
        shard = shards[j % n]
        shard.samples.append(adv.samples[i])
        shard.advantages.append(adv.advantages[i])
        if process is not None:
            shard.process_rewards.append(process[i])
    return shards


def dead_ranks(ranks: list[ActorHandle], timeout_s: float = 30.0) -> list[int]:
    """Ranks whose actor has died. A live rank answers at once unless it is stuck in a collective
    with a dead peer, so the probe stops at the first dead rank it finds (or after `timeout_s`)."""
    probes = {a.node_id.remote(): rank for rank, a in enumerate(ranks)}
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


def _step_of(path: Path) -> int:
    return json.loads((path / DRIVER_STATE).read_text())["step"]
