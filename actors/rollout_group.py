"""The rollout side of a run (docs/design.md §8.2): the rollout workers, the scorers of the reward
route (reward workers, judges), the training prompt stream, and turning prompts into a step's
scored rows — also held-out decoding, and (async) the next step's rollout kept in flight.

A step's prompts are a queue of shards the rollout workers take one at a time (a worker that
finishes early takes the next); each shard's rows go to every scorer of the route in chunks as
soon as the shard is back (ray.wait), while other shards still decode. Inside a worker the shard
is the sampler's queue (rollout/engine.py).

Trajectories never come to the driver: a rollout call has two return values, its rows' RowMeta
(fetched here) and their TrajectoryBatch (left in the object store; scorers and learner ranks
read it by object ref). Both are return values, so the driver owns them and they outlive the worker
that made them (an object a worker `ray.put` itself is lost with the worker).

Faults: a call whose actor died is re-issued — a shard to the same rollout worker once Ray
restarted it and it holds the current weights, a scorer's chunk to the next worker of its pool.
Every (prompt uid, sample) comes back exactly once and is answered exactly once by every scorer.
Nodes (§8.6): workers on a draining or lost node leave their pool (actors/pool.py) and their shards
go to others; a lost node's batches are decoded again before the update (`regenerate_lost`).
"""
from __future__ import annotations

import logging
import math
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import ray
from ray.actor import ActorHandle
from ray.exceptions import ObjectLostError, RayActorError
from tqdm import tqdm

from rewards.contract import ResponseScore
from rewards.process import ProcessScore
from rewards.result import Score
from rollout.params import SamplingParams
from rollout.requests import PromptRecord
from rollout.trajectory_batch import RowMeta
from tasks.prompt_stream import PromptStream
from tasks.screen import ScreenedRows

from .accounting import check_accounting, record
from .cluster_watch import ClusterWatch, stored_on
from .config import PoolSection, RunConfig
from .hooks import RunHooks
from .judge_worker import JudgeWorker
from .liveness import wait_restarted
from .placement import Placements, Slots, actor_options, gpu_share, threads
from .pool import Pool, Pools
from .reward_route import Key, Scorer, check_reward_failures, evaluation_route, step_rewards, training_route
from .reward_worker import RewardWorker
from .rollout_worker import RolloutWorker
from .step_batch import StepBatch
from .step_metrics import reward_metrics
from .timer import StepTimer
from .weights_source import Weights

log = logging.getLogger(__name__)
Encode = Callable[[dict[str, Any]], list[int]]  # a task row -> its prompt's token ids


@dataclass
class Call:
    """One remote call in flight, with what re-issuing it takes: a rollout shard (its records, and
    the ref of the TrajectoryBatch returned beside its RowMeta), or a scorer's chunk (its rows)."""
    worker: int
    items: list
    scorer: Scorer | None = None  # None: a rollout shard
    batch: Any = None


@dataclass
class RolloutJob:
    """A rollout in flight: created by `RolloutGroup.submit`, finished by `RolloutGroup.collect`."""
    records: list[PromptRecord]
    task_rows: dict[str, dict[str, Any]]  # by prompt uid
    params: SamplingParams
    route: list[Scorer]
    queue: deque = field(default_factory=deque)  # shards no worker has taken yet
    pending: dict[Any, Call] = field(default_factory=dict)  # by the ref of the result collect waits for
    reissued: Counter = field(default_factory=Counter)  # by pool
    turn: Counter = field(default_factory=Counter)  # each scorer's next worker (round robin)
    rows: list[RowMeta] = field(default_factory=list)  # what came back, in request order
    stored: dict[Any, list[str]] = field(default_factory=dict)  # each batch's nodes when it came back
    redone: dict[Any, Any] = field(default_factory=dict)  # a batch lost before its scorers read it -> its new ref

    def absorb(self, more: RolloutJob) -> None:
        """A refill round's finished job joins this one (same params): the step's rows are both's.
        New lists and dicts: the step's StepBatch holds this job's `rows` list itself."""
        self.records, self.rows = self.records + more.records, self.rows + more.rows
        self.task_rows, self.stored = self.task_rows | more.task_rows, self.stored | more.stored
        self.reissued = self.reissued + more.reissued


def records_for(uids: list[str], prompt_ids: list[list[int]], samples: int,
                rows: list[dict[str, Any]] | None = None) -> list[PromptRecord]:
    """Every prompt `samples` times; a prompt's samples stay adjacent (same shard, shared prefix, one
    image encoding). `rows`: the task rows, for their images (None: text prompts)."""
    images = [row.get("image") or "" for row in rows] if rows is not None else [""] * len(uids)
    return [PromptRecord(uid, ids, k, image) for uid, ids, image in zip(uids, prompt_ids, images)
            for k in range(samples)]


def split(items: list, n: int) -> list[list]:
    """n contiguous, nearly equal parts (empty parts dropped)."""
    k, r = divmod(len(items), n)
    bounds = [i * k + min(i, r) for i in range(n + 1)]
    return [items[bounds[i]:bounds[i + 1]] for i in range(n) if bounds[i + 1] > bounds[i]]


class RolloutGroup:
    def __init__(self, cfg: RunConfig, workers: list[ActorHandle], rewarders: list[ActorHandle],
                 judges: list[ActorHandle], weights: Weights, encode: Encode, prompts: PromptStream | None = None,
                 evals: ScreenedRows | None = None, hooks: RunHooks | None = None,
                 pools: dict[str, Pool] | None = None, watch: ClusterWatch | None = None) -> None:
        self.cfg, self.workers, self.rewarders, self.judges = cfg, workers, rewarders, judges
        self.watch = watch or ClusterWatch()
        self.pools = Pools(pools or {name: Pool(name, handles) for name, handles in
                                     (("rollout", workers), ("reward", rewarders), ("judge", judges))},
                           self.watch, weights)
        self.collected: RolloutJob | None = None  # the last training rollout collected
        self.weights, self.encode, self.prompts, self.hooks = weights, encode, prompts, hooks or RunHooks()
        self.eval_rows = {f"eval-{i}": row for i, row in enumerate(evals.rows)} if evals else {}
        self.eval_prompts = evals.prompts if evals else []
        self.route = training_route(cfg.reward, rewarders, judges, cfg.trainer.reward_chunk)
        self.job: RolloutJob | None = None  # async: the next step's rollout, already in flight
        self.job_cursor: dict[str, Any] | None = None  # the prompt stream before `job`'s prompts were drawn

    @classmethod
    def start(cls, cfg: RunConfig, path: str, reward: str, namespace: str, places: Placements, weights: Weights,
              encode: Encode, prompts: PromptStream | None, evals: ScreenedRows, hooks: RunHooks,
              watch: ClusterWatch | None = None) -> RolloutGroup:
        """Create the rollout workers, the reward workers and (when the route has a judge) the judge
        pool, each in its placement group."""
        c, r = cfg.cluster, cfg.reward

        def actor(cls: type, pool: str, i: int, slots: Slots, share: float = 1.0) -> Any:
            pg, index = slots.slots[i]
            options = actor_options(getattr(c, pool), f"{pool}-{i}", namespace, pg, index, share, restartable=True)
            return ray.remote(cls).options(**options)

        makers: dict[str, tuple[Slots | None, Callable[[int], ActorHandle]]] = {
            "rollout": (places.rollout, lambda i: actor(RolloutWorker, "rollout", i, places.rollout,
                                                        gpu_share(places.colocated)).remote(
                i, cfg.model, path, threads(c.rollout))),
            "reward": (places.reward, lambda i: actor(RewardWorker, "reward", i, places.reward).remote(
                i, path, reward, r.process_rule, r.chunk_tokens, r.limits, timeout_s=r.timeout_s)),
            "judge": (places.judge, lambda i: actor(JudgeWorker, "judge", i, places.judge).remote(
                i, cfg.judge, path, r.chunk_tokens, r.judge_correct_at, c.judge.gpus_per_worker, threads(c.judge))),
        }
        pools = {}
        for name, (slots, make) in makers.items():
            section: PoolSection = getattr(c, name)
            minimum = section.min_workers or 1
            if slots is None or (name == "rollout" and places.colocated):  # no judge; or the learners' bundles
                pools[name] = Pool(name, [make(i) for i in range(section.num_workers if slots else 0)], minimum)
            else:  # elastic
                pools[name] = Pool.placed(name, slots, minimum, make, namespace)
        return cls(cfg, pools["rollout"].handles, pools["reward"].handles, pools["judge"].handles, weights, encode,
                   prompts, evals, hooks, pools, watch)

    # ---- one RL step's rollout ---------------------------------------------------------------
    def step_batch(self, step: int, timer: StepTimer) -> StepBatch:
        """Step `step`'s rows (0-based) in request order with their rewards; a broken reward stops
        the run here. Async: the next step's rollout is in flight when this returns."""
        job = self.job or self._submit_next(timer)
        batch = self._scored(job, step, timer)
        self.collected = job
        self.job = self.job_cursor = None
        if self.cfg.async_.max_staleness and step + 1 < self.cfg.trainer.steps:  # step+1 decodes during update
            self.job = self._submit_next(timer)
        return batch

    def refill(self, batch: StepBatch, prompts: int, step: int, timer: StepTimer) -> StepBatch:
        """Dynamic sampling (lockstep only): `prompts` more prompts from the stream, decoded by the
        weights that decoded `batch`, added to it (a lost node's batches are then decoded again alike)."""
        job = self._submit_prompts(prompts)
        more = self._scored(job, step, timer)
        self.collected.absorb(job)
        return batch.extended(more)

    def _scored(self, job: RolloutJob, step: int, timer: StepTimer) -> StepBatch:
        with timer("rollout_s"):  # rewards are scored as shards come back
            rows, scores, process = self.collect(job, progress=self.cfg.trainer.progress)
        self.hooks.rollout_collected(job.records, rows, scores, sum(job.reissued.values()))
        check_reward_failures(scores.values(), self.cfg.reward.max_failed_fraction, f"step {step + 1}")
        reward_m = reward_metrics(self.cfg.reward, rows, scores, process)
        scores, chunks = step_rewards(self.cfg.reward, self.cfg.algo.uses_value, rows, scores, process)
        return StepBatch(rows, scores, chunks, reward_m, timer.seconds["rollout_s"], sum(job.reissued.values()))

    def _submit_next(self, timer: StepTimer) -> RolloutJob:
        """The next step's prompts on the workers, with the learner's current weights."""
        self.refresh()
        self.weights.publish(timer)
        self.job_cursor = self.prompts.state_dict()
        return self._submit_prompts(self.cfg.trainer.prompts_per_step)

    def _submit_prompts(self, n: int) -> RolloutJob:
        batch = self.prompts.next_batch(n)
        records = records_for([s.uid for s in batch], [self.encode(s.row) for s in batch],
                              self.cfg.trainer.responses_per_prompt, [s.row for s in batch])
        job = self.submit(records, {s.uid: s.row for s in batch}, self.cfg.rollout, self.route)
        self.hooks.rollout_submitted()
        return job

    def after_update(self, timer: StepTimer) -> None:
        """Lockstep: the workers take the new weights now. Async: the next rollout is already in
        flight (sampled by the weights before this update); the workers take the new weights when
        the one after it is submitted."""
        if not self.cfg.async_.max_staleness:
            self.pools.retire_unusable(self.watch.poll())  # a broadcast to a lost node's worker would fail
            self.weights.publish(timer)

    def cursor(self) -> dict[str, Any] | None:
        """The prompt stream's position before a rollout in flight drew its prompts (None: none in
        flight): what a checkpoint must record, so that a resumed run draws those prompts again."""
        return self.job_cursor

    def forget(self) -> None:
        """Drop any rollout in flight (the run goes back to a checkpoint): its calls are waited for,
        not read, since a shared-memory slot they decode from must not be written before."""
        if self.job is not None and self.job.pending:
            ray.wait(list(self.job.pending), num_returns=len(self.job.pending))
        self.job = self.job_cursor = None

    # ---- held-out decoding -----------------------------------------------------------------
    def decode_eval(self, params: SamplingParams, samples: int = 1,
                    progress: bool = False) -> tuple[list[RowMeta], dict[Key, Score]]:
        """The held-out prompts decoded (`samples` each) with `params` and scored by the task's own
        rule; rows in held-out order (their trajectories stay in the object store)."""
        records = records_for(list(self.eval_rows), self.eval_prompts, samples, list(self.eval_rows.values()))
        rows, scores, _ = self.collect(self.submit(records, self.eval_rows, params,
                                                   evaluation_route(self.rewarders, self.cfg.trainer.reward_chunk)),
                                       progress)
        order = {uid: i for i, uid in enumerate(self.eval_rows)}
        rows.sort(key=lambda m: (order[m.prompt_uid], m.sample_idx))
        return rows, scores

    # ---- submit and collect ------------------------------------------------------------------
    def submit(self, records: list[PromptRecord], task_rows: dict[str, dict[str, Any]], params: SamplingParams,
               route: list[Scorer]) -> RolloutJob:
        """Queue the records as shards of about 2 x rollout.max_batch_rows (at least one per worker:
        big enough to keep a worker's slots refilled, small enough that workers balance) and give
        each worker its first."""
        # As many shards as the pool's target, not its current size: a step is split (and decoded) alike
        # however many workers are up.
        shards = max(self.pools["rollout"].target, math.ceil(len(records) / (2 * params.max_batch_rows)))
        job = RolloutJob(records, task_rows, params, route, deque(split(records, shards)))
        self._dispatch(job)
        return job

    def collect(self, job: RolloutJob, progress: bool = False) -> tuple[list[RowMeta], dict[Key, Score],
                                                                         dict[Key, ProcessScore]]:
        """Wait for every shard and every scorer's answers, re-issuing what a dead actor lost; the
        rows in request order (each RowMeta's `payload` the object ref of its batch), their outcome
        scores and process scores (empty without a process reward)."""
        rows: list[RowMeta] = []
        answers: dict[str, dict[Key, ResponseScore]] = {s.name: {} for s in job.route}
        bar = tqdm(total=len(job.records) * (1 + len(job.route)), desc="rollout+reward", disable=not progress,
                   leave=False)
        while job.pending or job.queue:
            if not job.pending:  # every worker that held shards left the pool: wait for one
                self._await_capacity()
                self._dispatch(job)
            [ref], _ = ray.wait(list(job.pending), num_returns=1)
            call = job.pending.pop(ref)
            try:
                result = ray.get(ref)
            except RayActorError as err:
                self._reissue(job, call, f"{type(err).__name__}")
                continue
            except ObjectLostError:  # a scorer could not read its chunk's batch: it went with its node
                if call.scorer is None:
                    raise
                self._rescore(job, call, rows)
                continue
            if call.scorer is None and any(m.policy_version < self.weights.held for m in result):
                self._reissue(job, call, "restarted since the last sync")  # idle when Ray restarted it
                continue
            bar.update(len(call.items))
            if call.scorer is None:
                self._retire_unusable()
                self._take_shard(job, call.worker)
                shard = [replace(m, payload=call.batch) for m in result]
                rows += shard
                self.hooks.shard_returned(shard)
                for scorer in job.route:
                    for start in range(0, len(shard), scorer.per_call):
                        self._score(job, scorer, shard[start:start + scorer.per_call])
            else:
                record(answers[call.scorer.name], result)
        bar.close()
        rows = [replace(m, payload=job.redone.get(m.payload, m.payload)) for m in rows]
        job.stored = stored_on(list(dict.fromkeys(m.payload for m in rows)))
        order = {(r.uid, r.sample_idx): i for i, r in enumerate(job.records)}
        rows.sort(key=lambda m: order[m.key])  # what follows sums over them: a replay must sum alike
        job.rows = rows
        check_accounting(job.records, rows, answers)
        merged = [a for by_key in answers.values() for a in by_key.values()]
        return (rows, {a.key: a.outcome for a in merged if a.outcome is not None},
                {a.key: a.process for a in merged if a.process is not None})

    def _take_shard(self, job: RolloutJob, w: int) -> None:
        if job.queue and w not in self.pools["rollout"].retired:
            self._generate(job, w, job.queue.popleft())

    def _dispatch(self, job: RolloutJob) -> None:
        """A shard to every active rollout worker that holds none."""
        busy = {c.worker for c in job.pending.values() if c.scorer is None}
        for w in self.pools["rollout"].active:
            if w not in busy:
                self._take_shard(job, w)

    def _generate(self, job: RolloutJob, w: int, shard: list[PromptRecord]) -> None:
        metas, batch = self.workers[w].generate.remote(shard, job.params, self.weights.binding(w))
        job.pending[metas] = Call(w, shard, batch=batch)

    def _score(self, job: RolloutJob, scorer: Scorer, part: list[RowMeta]) -> None:
        """A chunk (rows of one batch) to the scorer's next worker. The batch goes as a top-level
        object ref: Ray hands the worker the batch itself."""
        if not self.pools[scorer.name].active:  # every worker of the pool left with its node
            self._await_capacity()
        turn = job.turn[scorer.name]
        w = self.pools[scorer.name].next_active(turn)
        job.turn[scorer.name] = turn + 1
        ref = scorer.workers[w].score.remote(part[0].payload, [m.row for m in part],
                                             [job.task_rows[m.prompt_uid] for m in part], scorer.parts)
        job.pending[ref] = Call(w, part, scorer)

    def _reissue(self, job: RolloutJob, call: Call, why: str) -> None:
        pool = call.scorer.name if call.scorer else "rollout"
        job.reissued[pool] += 1
        log.warning("%s-%d lost its call (%s); re-issuing its %d items", pool, call.worker, why, len(call.items))
        self.pools.retire_unusable(self.watch.poll())  # a node gone takes its workers out of the pools
        if call.scorer is not None:
            self._score(job, call.scorer, call.items)
            return
        if call.worker in self.pools["rollout"].retired:  # its node is draining or gone: another takes it
            job.queue.appendleft(call.items)
            self._dispatch(job)
            return
        wait_restarted(self.workers[call.worker])
        self.weights.resync(call.worker)
        self._generate(job, call.worker, call.items)

    def _rescore(self, job: RolloutJob, call: Call, rows: list[RowMeta]) -> None:
        """The chunk's batch was lost with its node before this scorer read it: its shard is decoded
        again (once, however many chunks of it fail) and the chunk scored from the new copy."""
        lost = call.items[0].payload
        if lost not in job.redone:
            log.warning("the trajectory batch of %d rows was lost with its node before %s read it; decoding "
                        "it again", sum(m.payload == lost for m in rows), call.scorer.name)
            self.pools.retire_unusable(self.watch.poll())
            [again] = self._redecode(job, [sorted((m for m in rows if m.payload == lost), key=lambda m: m.row)])
            job.redone[lost] = again[0].payload
        job.reissued[call.scorer.name] += 1
        self._score(job, call.scorer, [replace(m, payload=job.redone[lost]) for m in call.items])

    # ---- the cluster changing under the pools (docs/design.md §8.6) ----------------------------
    def refresh(self) -> None:
        """A step boundary: the pools follow the cluster (retire, release, refill; wait while one is
        below its minimum) — actors/pool.py `Pools.refresh`."""
        self.pools.refresh(self._calls())

    def left_pool(self, worker: int) -> bool:
        """Whether rollout worker `worker` has left the pool, its node draining or gone (polled now)."""
        self.pools.retire_unusable(self.watch.poll())
        return worker in self.pools["rollout"].retired

    def _retire_unusable(self) -> None:
        self.pools.retire_unusable(self.watch.maybe_poll())

    def _await_capacity(self) -> None:
        self.pools.await_capacity(self._calls())

    def _calls(self) -> list[tuple[str, int]]:
        """(pool, slot) of every call of the rollout in flight (async), which its worker still owes."""
        calls = self.job.pending.values() if self.job else []
        return [(c.scorer.name if c.scorer else "rollout", c.worker) for c in calls]

    def regenerate_lost(self, rows: list[RowMeta]) -> list[RowMeta]:
        """`rows` (of the last training rollout) with every batch that has no copy left on a usable
        node — lost with a dead node, or only on a draining one — decoded again (`_redecode`)."""
        job = self.collected
        if job is None or not rows:
            return rows
        self.watch.poll()
        lost = self.watch.stranded({m.payload: job.stored.get(m.payload, []) for m in rows})
        if not lost:
            return rows
        by_batch = [sorted((m for m in job.rows if m.payload == ref), key=lambda m: m.row) for ref in lost]
        log.warning("%d trajectory batch(es) of %d rows lost with their node; decoding them again",
                    len(by_batch), sum(map(len, by_batch)))
        self.refresh()
        fresh = {m.key: m for shard in self._redecode(job, by_batch) for m in shard}
        return [fresh[m.key] if m.payload in lost else m for m in rows]

    def _redecode(self, job: RolloutJob, by_batch: list[list[RowMeta]]) -> list[list[RowMeta]]:
        """The shards that produced these batches' rows (each in row order) decoded again by the
        active workers: the same shard with the same seeds and weights gives the same rows (checked).
        A batch sampled with weights the workers no longer hold (async.max_staleness=1) is decoded
        with the ones they hold: the same prompts and seeds, fresher samples, nothing lost."""
        stale = any(m.policy_version != self.weights.held for shard in by_batch for m in shard)
        if stale:
            log.warning("the lost rows were sampled with an older policy than the rollout workers now hold "
                        "(async.max_staleness=1): decoding them with version %d", self.weights.held)
        records = {(r.uid, r.sample_idx): r for r in job.records}
        shards = [[records[m.key] for m in shard] for shard in by_batch]
        redo = RolloutJob([r for shard in shards for r in shard], job.task_rows, job.params, [], deque(shards))
        self._dispatch(redo)
        again, _, _ = self.collect(redo)
        self.watch.regenerated += len(shards)
        fresh = {m.key: m for m in again}
        job.stored |= redo.stored
        if not stale and any(replace(fresh[m.key], payload=None) != replace(m, payload=None)
                             for shard in by_batch for m in shard):
            raise RuntimeError("a regenerated trajectory batch differs from the lost one: sampling is not reproducible")
        return [[fresh[m.key] for m in shard] for shard in by_batch]

    def pool_metrics(self) -> dict[str, float]:
        """Current vs target size of every pool, and workers started in place of lost ones."""
        return self.pools.metrics()

    def cluster_metrics(self) -> dict[str, float]:
        """A step's figures about the cluster: its pools, draining and lost nodes, regenerated batches."""
        return self.pool_metrics() | self.watch.metrics()

    # ---- devices and life ----------------------------------------------------------------------
    def sleep(self) -> int:
        """Colocated: every rollout worker releases its weights for the learner's update; bytes freed."""
        return sum(ray.get([w.sleep.remote() for w in self.workers]))

    def shutdown(self) -> None:
        for actor in self.workers + self.rewarders + self.judges:
            if actor is not None:  # None: a slot whose worker never started
                ray.kill(actor)

