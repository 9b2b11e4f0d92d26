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
"""
from __future__ import annotations

import logging
import math
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayActorError
from tqdm import tqdm

from rewards.contract import ResponseScore
from rewards.process import ProcessScore
from rewards.result import Score
from rollout.params import SamplingParams
from rollout.requests import PromptRecord
from rollout.trajectory_batch import RowMeta
from tasks.prompt_stream import PromptStream
from tasks.screen import ScreenedRows

from .config import RunConfig
from .hooks import RunHooks
from .judge_worker import JudgeWorker
from .liveness import wait_restarted
from .placement import Placements, actor_options, gpu_share, threads
from .reward_route import Key, Scorer, check_reward_failures, evaluation_route, step_rewards, training_route
from .reward_worker import RewardWorker
from .rollout_worker import RolloutWorker
from .step_batch import StepBatch
from .step_metrics import reward_metrics
from .timer import StepTimer

log = logging.getLogger(__name__)
Encode = Callable[[dict[str, Any]], list[int]]  # a task row -> its prompt's token ids


class Weights(Protocol):
    """Where the rollout workers' weights come from: the learner group, or (evaluation only) the
    checkpoint each worker loaded when it started."""
    @property
    def held(self) -> int:
        """The version every rollout worker holds."""

    def publish(self, timer: StepTimer) -> None:
        """Bring every rollout worker to the learner's version (nothing when they hold it)."""

    def resync(self, worker: int) -> None:
        """Give a worker Ray restarted the version the others hold."""


class Checkpoint:
    """Evaluation only: every worker holds version 0, the checkpoint it loaded (a restarted one too)."""
    held = 0

    def publish(self, timer: StepTimer) -> None:
        pass

    def resync(self, worker: int) -> None:
        pass


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
                 evals: ScreenedRows | None = None, hooks: RunHooks | None = None) -> None:
        self.cfg, self.workers, self.rewarders, self.judges = cfg, workers, rewarders, judges
        self.weights, self.encode, self.prompts, self.hooks = weights, encode, prompts, hooks or RunHooks()
        self.eval_rows = {f"eval-{i}": row for i, row in enumerate(evals.rows)} if evals else {}
        self.eval_prompts = evals.prompts if evals else []
        self.route = training_route(cfg.reward, rewarders, judges, cfg.trainer.reward_chunk)
        self.job: RolloutJob | None = None  # async: the next step's rollout, already in flight
        self.job_cursor: dict[str, Any] | None = None  # the prompt stream before `job`'s prompts were drawn
        self.restarts = 0  # calls lost with their worker (Ray restarted it) so far

    @classmethod
    def start(cls, cfg: RunConfig, path: str, reward: str, namespace: str, places: Placements, weights: Weights,
              encode: Encode, prompts: PromptStream | None, evals: ScreenedRows, hooks: RunHooks) -> RolloutGroup:
        """Create the rollout workers, the reward workers and (when the route has a judge) the judge
        pool, each in its placement group."""
        c, r = cfg.cluster, cfg.reward

        def actor(cls: type, pool: str, i: int, pg: Any, share: float = 1.0) -> Any:
            options = actor_options(getattr(c, pool), f"{pool}-{i}", namespace, pg, i, share, restartable=True)
            return ray.remote(cls).options(**options)

        rollout = [actor(RolloutWorker, "rollout", i, places.rollout, gpu_share(places.colocated)).remote(
            i, cfg.model, path, threads(c.rollout)) for i in range(c.rollout.num_workers)]
        rewarders = [actor(RewardWorker, "reward", i, places.reward).remote(
            i, path, reward, r.process_rule, r.chunk_tokens, r.limits, timeout_s=r.timeout_s)
            for i in range(c.reward.num_workers)]
        judges = [actor(JudgeWorker, "judge", i, places.judge).remote(
            i, cfg.judge, path, r.chunk_tokens, r.judge_correct_at, c.judge.gpus_per_worker, threads(c.judge))
            for i in range(c.judge.num_workers if places.judge else 0)]
        return cls(cfg, rollout, rewarders, judges, weights, encode, prompts, evals, hooks)

    # ---- one RL step's rollout ---------------------------------------------------------------
    def step_batch(self, step: int, timer: StepTimer) -> StepBatch:
        """Step `step`'s rows (0-based) in request order with their rewards; a broken reward stops
        the run here. Async: the next step's rollout is in flight when this returns."""
        job = self.job or self._submit_next(timer)
        with timer("rollout_s"):  # rewards are scored as shards come back
            rows, scores, process = self.collect(job, progress=self.cfg.trainer.progress)
        self.hooks.rollout_collected(job.records, rows, scores, sum(job.reissued.values()))
        check_reward_failures(scores.values(), self.cfg.reward.max_failed_fraction, f"step {step + 1}")
        reward_m = reward_metrics(self.cfg.reward, rows, scores, process)
        scores, chunks = step_rewards(self.cfg.reward, self.cfg.algo.uses_value, rows, scores, process)
        batch = StepBatch(rows, scores, chunks, reward_m, timer.seconds["rollout_s"], sum(job.reissued.values()))
        self.job = self.job_cursor = None
        if self.cfg.async_.max_staleness and step + 1 < self.cfg.trainer.steps:  # step+1 decodes during update
            self.job = self._submit_next(timer)
        return batch

    def _submit_next(self, timer: StepTimer) -> RolloutJob:
        """The next step's prompts on the workers, with the learner's current weights."""
        self.weights.publish(timer)
        self.job_cursor = self.prompts.state_dict()
        batch = self.prompts.next_batch(self.cfg.trainer.prompts_per_step)
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
            self.weights.publish(timer)

    def cursor(self) -> dict[str, Any] | None:
        """The prompt stream's position before a rollout in flight drew its prompts (None: none in
        flight): what a checkpoint must record, so that a resumed run draws those prompts again."""
        return self.job_cursor

    def forget(self) -> None:
        """Drop any rollout in flight (its results are never read): the run goes back to a checkpoint."""
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
        shards = max(len(self.workers), math.ceil(len(records) / (2 * params.max_batch_rows)))
        job = RolloutJob(records, task_rows, params, route, deque(split(records, shards)))
        for w in range(len(self.workers)):
            self._take_shard(job, w)
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
        while job.pending:
            [ref], _ = ray.wait(list(job.pending), num_returns=1)
            call = job.pending.pop(ref)
            try:
                result = ray.get(ref)
            except RayActorError as err:
                self._reissue(job, call, f"{type(err).__name__}")
                continue
            if call.scorer is None and any(m.policy_version < self.weights.held for m in result):
                self._reissue(job, call, "restarted since the last sync")  # idle when Ray restarted it
                continue
            bar.update(len(call.items))
            if call.scorer is None:
                self._take_shard(job, call.worker)
                shard = [replace(m, payload=call.batch) for m in result]
                rows += shard
                for scorer in job.route:
                    for start in range(0, len(shard), scorer.per_call):
                        self._score(job, scorer, shard[start:start + scorer.per_call])
            else:
                _record(answers[call.scorer.name], result)
        bar.close()
        order = {(r.uid, r.sample_idx): i for i, r in enumerate(job.records)}
        rows.sort(key=lambda m: order[m.key])  # what follows sums over them: a replay must sum alike
        _account(job.records, rows, answers)
        merged = [a for by_key in answers.values() for a in by_key.values()]
        return (rows, {a.key: a.outcome for a in merged if a.outcome is not None},
                {a.key: a.process for a in merged if a.process is not None})

    def _take_shard(self, job: RolloutJob, w: int) -> None:
        if job.queue:
            self._generate(job, w, job.queue.popleft())

    def _generate(self, job: RolloutJob, w: int, shard: list[PromptRecord]) -> None:
        metas, batch = self.workers[w].generate.remote(shard, job.params)
        job.pending[metas] = Call(w, shard, batch=batch)

    def _score(self, job: RolloutJob, scorer: Scorer, part: list[RowMeta]) -> None:
        """A chunk (rows of one batch) to the scorer's next worker. The batch goes as a top-level
        object ref: Ray hands the worker the batch itself."""
        w = job.turn[scorer.name] % len(scorer.workers)
        job.turn[scorer.name] = w + 1
        ref = scorer.workers[w].score.remote(part[0].payload, [m.row for m in part],
                                             [job.task_rows[m.prompt_uid] for m in part], scorer.parts)
        job.pending[ref] = Call(w, part, scorer)

    def _reissue(self, job: RolloutJob, call: Call, why: str) -> None:
        pool = call.scorer.name if call.scorer else "rollout"
        job.reissued[pool] += 1
        self.restarts += 1
        log.warning("%s-%d lost its call (%s); re-issuing its %d items", pool, call.worker, why, len(call.items))
        if call.scorer is not None:
            self._score(job, call.scorer, call.items)
            return
        wait_restarted(self.workers[call.worker])
        self.weights.resync(call.worker)
        self._generate(job, call.worker, call.items)

    # ---- devices and life ----------------------------------------------------------------------
    def pool_metrics(self) -> dict[str, float]:
        """pool/<pool>/size (workers held) and /target (configured; a pool not started: 0), pool/restarts."""
        c = self.cfg.cluster
        pools = {"rollout": (self.workers, c.rollout), "reward": (self.rewarders, c.reward),
                 "judge": (self.judges, c.judge)}
        m = {f"pool/{name}/size": float(len(held)) for name, (held, _) in pools.items()}
        m |= {f"pool/{name}/target": float(p.num_workers if held else 0) for name, (held, p) in pools.items()}
        return m | {"pool/restarts": float(self.restarts)}

    def sleep(self) -> int:
        """Colocated: every rollout worker releases its weights for the learner's update; bytes freed."""
        return sum(ray.get([w.sleep.remote() for w in self.workers]))

    def shutdown(self) -> None:
        for actor in self.workers + self.rewarders + self.judges:
            ray.kill(actor)


def _record(answers: dict[Key, ResponseScore], result: list[ResponseScore]) -> None:
    for a in result:
        if a.key in answers:
            raise RuntimeError(f"reward accounting failed: {a.key} answered twice")
        answers[a.key] = a


def _account(records: list[PromptRecord], rows: list[RowMeta], answers: dict[str, dict[Key, ResponseScore]]) -> None:
    """Every requested (uid, sample) came back exactly once and every scorer answered it."""
    want = Counter((r.uid, r.sample_idx) for r in records)
    got = Counter(m.key for m in rows)
    unscored = {name: sorted(set(want) - set(by_key))[:5] for name, by_key in answers.items()
                if set(by_key) != set(want)}
    if got != want or unscored:
        lost, extra = want - got, got - want
        raise RuntimeError(f"prompt accounting failed: lost {sorted(lost)[:5]}, duplicated {sorted(extra)[:5]}, "
                           f"unscored {unscored}")
