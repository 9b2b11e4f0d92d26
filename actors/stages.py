"""Rollout + reward as one streamed stage: the step's prompts are a queue of shards that rollout
workers take one at a time (a worker that finishes early takes the next shard), and each shard's
trajectories are scored by reward workers as soon as it comes back (ray.wait). Inside a worker
the shard is the sampler's queue: a finished row's slot takes its next prompt (rollout/engine.py).

Trajectories never come to the driver: a rollout task has two return values, its rows' RowMeta
(fetched here) and their TrajectoryBatch (left in the object store; reward workers and learner
ranks read it by reference). Both are return values, so the driver owns them and they outlive the
worker that made them (an object a worker `ray.put` itself is lost with the worker).

Faults: a shard or chunk whose actor died is re-issued (a rollout worker only after Ray restarted
it and it got the current weights). Every (prompt uid, sample) is accounted exactly once.
"""
from __future__ import annotations

import logging
import math
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from typing import Any

import ray
from ray.exceptions import RayActorError
from tqdm import tqdm

from rewards.result import Score
from rollout.params import SamplingParams
from rollout.requests import PromptRecord
from rollout.trajectory_batch import RowMeta

from .pools import Pools
from .sync import resync_restarted, wait_restarted

log = logging.getLogger(__name__)


@dataclass
class Task:
    """One remote call in flight: a rollout shard (its PromptRecords, and the reference to the
    TrajectoryBatch the call returns beside its RowMeta) or a reward chunk (its RowMeta)."""
    stage: str
    worker: int
    items: list
    batch: Any = None


@dataclass
class RolloutJob:
    """Shards in flight; created by `submit`, finished by `collect`."""
    records: list[PromptRecord]
    rows: dict[str, dict[str, Any]]
    params: SamplingParams
    queue: deque = field(default_factory=deque)  # shards no worker has taken yet
    pending: dict[Any, Task] = field(default_factory=dict)  # by the ref of the result collect waits for
    reissued: Counter = field(default_factory=Counter)


def split(items: list, n: int) -> list[list]:
    """n contiguous, nearly equal parts (empty parts dropped)."""
    k, r = divmod(len(items), n)
    bounds = [i * k + min(i, r) for i in range(n + 1)]
    return [items[bounds[i]:bounds[i + 1]] for i in range(n) if bounds[i + 1] > bounds[i]]


def submit(pools: Pools, records: list[PromptRecord], rows: dict[str, dict[str, Any]],
           params: SamplingParams) -> RolloutJob:
    """Queue the records as shards of about 2 x rollout.max_batch_rows (at least one per worker:
    big enough to keep a worker's slots refilled, small enough that workers balance) and give
    each worker its first."""
    workers = len(pools.rollout)
    shards = max(workers, math.ceil(len(records) / (2 * params.max_batch_rows)))
    job = RolloutJob(records, rows, params, deque(split(records, shards)))
    for w in range(workers):
        _take_shard(pools, job, w)
    return job


def _take_shard(pools: Pools, job: RolloutJob, w: int) -> None:
    if job.queue:
        _generate(pools, job, w, job.queue.popleft())


def _generate(pools: Pools, job: RolloutJob, w: int, shard: list[PromptRecord]) -> None:
    metas, batch = pools.rollout[w].generate.remote(shard, job.params)
    job.pending[metas] = Task("rollout", w, shard, batch)


def collect(pools: Pools, job: RolloutJob, version: int, chunk: int,
            progress: bool = False) -> tuple[list[RowMeta], dict[tuple[str, int], Score]]:
    """Wait for every shard, scoring as they arrive; returns every row's RowMeta (its `payload` the
    reference to its TrajectoryBatch) and their scores."""
    samples: list[RowMeta] = []
    scores: dict[tuple[str, int], Score] = {}
    bar = tqdm(total=2 * len(job.records), desc="rollout+reward", disable=not progress, leave=False)
    next_reward = 0
    while job.pending:
        [ref], _ = ray.wait(list(job.pending), num_returns=1)
        task = job.pending.pop(ref)
        stage, w, items = task.stage, task.worker, task.items
        try:
            result = ray.get(ref)
        except RayActorError as err:
            job.reissued[stage] += 1
            log.warning("%s-%d died (%s); re-issuing its %d items", stage, w, type(err).__name__, len(items))
            if stage == "rollout":
                wait_restarted(pools.rollout[w])
                resync_restarted(pools, w, version)
                _generate(pools, job, w, items)
            else:
                next_reward = _score(pools, job, items, next_reward)
            continue
        if stage == "rollout" and any(m.policy_version < pools.weights_version for m in result):
            # Ray restarted the worker while it was idle: it sampled with its initial weights.
            job.reissued[stage] += 1
            log.warning("rollout-%d was restarted since the last sync; re-syncing it and re-issuing its %d items",
                        w, len(items))
            resync_restarted(pools, w, version)
            _generate(pools, job, w, items)
            continue
        bar.update(len(items))
        if stage == "rollout":
            _take_shard(pools, job, w)
            result = [replace(m, payload=task.batch) for m in result]
            samples += result
            for part in (result[i:i + chunk] for i in range(0, len(result), chunk)):
                next_reward = _score(pools, job, part, next_reward)
        else:
            for s in result:
                scores[(s.prompt_uid, s.sample_idx)] = s
    bar.close()
    _account(job.records, samples, scores)
    return samples, scores


def _score(pools: Pools, job: RolloutJob, part: list[RowMeta], worker: int) -> int:
    """Send a chunk (rows of one batch) to reward worker `worker` (round robin); returns the next
    worker index. The batch goes as a top-level reference: Ray hands the worker the batch itself."""
    w = worker % len(pools.reward)
    ref = pools.reward[w].score.remote(part[0].payload, [m.row for m in part], [job.rows[m.prompt_uid] for m in part])
    job.pending[ref] = Task("reward", w, part)
    return w + 1


def _account(records: list[PromptRecord], samples: list[RowMeta], scores: dict[tuple[str, int], Score]) -> None:
    """Every requested (uid, sample) came back exactly once and was scored."""
    want = Counter((r.uid, r.sample_idx) for r in records)
    got = Counter(m.key for m in samples)
    if got != want or set(scores) != set(want):
        lost, extra = want - got, got - want
        raise RuntimeError(f"prompt accounting failed: lost {sorted(lost)[:5]}, duplicated {sorted(extra)[:5]}, "
                           f"unscored {sorted(set(want) - set(scores))[:5]}")
