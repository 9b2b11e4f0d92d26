"""Between rollout and advantages: an outcome judge and the process reward (the `reward` config).

- reward.outcome=judge: the judge pool's verdict (0-1) replaces each response's rule reward.
- reward.process (a rule, run here in the driver, or "judge", run on the judge pool): per-chunk
  scores, placed on decoding steps (rewards/process.py). With a value model (algo=tracerl_value)
  they become per-token process rewards (× process_weight) that go to the learner ranks with the
  advantages, and the outcome advantage is scaled by outcome_weight; otherwise the response's
  reward is the weighted sum outcome_weight·r + process_weight·Σ chunk scores.

Only these need the response tokens on the driver: the trajectories are fetched (`trajectories`)
when a judge or a process reward is configured, never on the default path.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import ray
from ray.actor import ActorHandle
from ray.exceptions import RayActorError

from learner.advantages import AdvantageResult
from rewards.judging import JudgeRequest, rule_responses
from rewards.process import ProcessScore, get_process_fn, process_vector
from rewards.result import Score
from rollout.trajectory import Trajectory

from .config import RunConfig
from .sync import wait_restarted

log = logging.getLogger(__name__)
Key = tuple[str, int]


@dataclass
class JudgeJob:
    """Judge tasks in flight: created by `submit_judging`, finished by `collect_judging`."""
    judges: list[ActorHandle]
    outcome: bool
    chunk_tokens: int | None
    requests: list[JudgeRequest]
    pending: dict[Any, tuple[int, list[JudgeRequest]]] = field(default_factory=dict)  # ref -> (worker, part)
    reissued: int = 0

    def send(self, worker: int, part: list[JudgeRequest]) -> None:
        self.pending[self.judges[worker].score.remote(part, self.outcome, self.chunk_tokens)] = (worker, part)


def submit_judging(judges: list[ActorHandle], requests: list[JudgeRequest], outcome: bool,
                   chunk_tokens: int | None, per_task: int) -> JudgeJob:
    """`per_task` responses per task, round robin over the judge pool."""
    job = JudgeJob(judges, outcome, chunk_tokens, requests)
    for n, start in enumerate(range(0, len(requests), per_task)):
        job.send(n % len(judges), requests[start:start + per_task])
    return job


def collect_judging(job: JudgeJob) -> dict[Key, ProcessScore]:
    """Every response's scores, exactly once: a task whose worker died is re-issued to the
    restarted worker (counted in job.reissued)."""
    scores: dict[Key, ProcessScore] = {}
    while job.pending:
        [ref], _ = ray.wait(list(job.pending), num_returns=1)
        worker, part = job.pending.pop(ref)
        try:
            result = ray.get(ref)
        except RayActorError as err:
            job.reissued += 1
            log.warning("judge-%d died (%s); re-issuing its %d responses", worker, type(err).__name__, len(part))
            wait_restarted(job.judges[worker])
            job.send(worker, part)
            continue
        for s in result:
            key = (s.prompt_uid, s.sample_idx)
            if key in scores:
                raise RuntimeError(f"judge accounting failed: {key} scored twice")
            scores[key] = s
    missing = {(r.prompt_uid, r.sample_idx) for r in job.requests} - set(scores)
    if missing:
        raise RuntimeError(f"judge accounting failed: unscored {sorted(missing)[:5]}")
    return scores


def apply_rewards(cfg: RunConfig, judges: list[ActorHandle], tokenizer: Any, rows: dict[str, dict],
                  trajectories: Callable[[], list[Trajectory]],
                  scores: dict[Key, Score]) -> tuple[dict[Key, Score], dict[Key, list[float]], dict[str, float]]:
    """The step's rewards after the outcome judge and the process reward; no-op by default (then
    `trajectories`, which fetches the step's trajectories, is not called). Returns the scores the
    advantages are computed from, the per-token process rewards for the value model (empty
    without), and metrics."""
    r = cfg.reward
    if not (r.uses_judge or r.process):
        return scores, {}, {}
    start = time.perf_counter()
    trajs = trajectories()
    per_token: dict[Key, list[float]] = {}
    requests = [JudgeRequest(t.prompt_uid, t.sample_idx, t.response_ids, rows[t.prompt_uid]) for t in trajs]
    judged: dict[Key, ProcessScore] = {}
    m: dict[str, float] = {}
    if r.uses_judge:
        job = submit_judging(judges, requests, r.outcome == "judge", r.chunk_tokens if r.process == "judge" else None,
                             r.judge_batch)
        judged = collect_judging(job)
        m["judge/reissued"] = float(job.reissued)
    if r.process not in (None, "judge"):
        decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        process = {(s.prompt_uid, s.sample_idx): s
                   for s in rule_responses(get_process_fn(r.process), decode, requests, r.chunk_tokens)}
    else:
        process = judged if r.process == "judge" else {}
    failures = sum(len(s.failures) for s in process.values())
    if r.outcome == "judge":
        failures += sum(s.outcome_failure is not None for s in judged.values())
        scores = {k: replace(s, reward=judged[k].outcome,
                             correct=judged[k].outcome_failure is None and judged[k].outcome >= r.judge_correct_at)
                  for k, s in scores.items()}
        m["judge/outcome_mean"] = float(np.mean([s.reward for s in scores.values()]))
    if process:
        chunks = [x for s in process.values() for x in s.scores]
        m["process/reward_mean"] = float(np.mean(chunks)) if chunks else 0.0
        m["process/chunks_per_response"] = len(chunks) / max(len(process), 1)
        if cfg.algo.uses_value:  # per-token rewards for the value model's recursions
            for t in trajs:
                key = (t.prompt_uid, t.sample_idx)
                placed = process_vector(t.step_map, len(t.prompt_ids), t.block_size, t.canvas_len > 0,
                                        r.chunk_tokens, process[key].scores)
                per_token[key] = [r.process_weight * x for x in placed]
        else:  # one reward per response: the weighted sum
            scores = {k: replace(s, reward=r.outcome_weight * s.reward + r.process_weight * sum(process[k].scores))
                      for k, s in scores.items()}
    m["judge/failures"] = float(failures)
    m["judge_s"] = time.perf_counter() - start
    return scores, per_token, m


def weigh_outcome(cfg: RunConfig, adv: AdvantageResult, per_token: dict[Key, list[float]]) -> AdvantageResult:
    """With per-token process rewards the outcome advantage is the outcome's share (× outcome_weight)
    and each kept sample carries its process rewards to the learner."""
    if per_token:
        adv.process_rewards = [per_token[(s.prompt_uid, s.sample_idx)] for s in adv.samples]
    if cfg.reward.process and cfg.algo.uses_value and cfg.reward.outcome_weight != 1.0:
        adv.advantages = [a * cfg.reward.outcome_weight for a in adv.advantages]
    return adv
