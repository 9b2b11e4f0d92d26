"""The one reward route (docs/design.md §7): what each scorer scores, and how their answers make a
step's rewards. The only module that reads which source (`rule` or `judge`) the `reward` config
picks for the outcome and the process reward.

Every scorer is asked the same way and answers the same way (rewards/contract.py): a chunk of a
shard's rows, with the parts wanted, answered by one `ResponseScore` per row. The reward workers
run the rules (the task's outcome reward, a rule process reward); the judge pool runs the judge
(an outcome verdict, per-chunk process verdicts). The driver only sends rows and adds numbers up:
no scorer runs here, and no response tokens come here.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rewards.contract import ScoreParts
from rewards.limits import RewardLimits
from rewards.process import ProcessScore, get_process_fn
from rewards.result import Score
from rollout.trajectory_batch import RowMeta

log = logging.getLogger(__name__)
Key = tuple[str, int]  # (prompt uid, sample index)
RULE, JUDGE = "rule", "judge"


class RewardSection(BaseModel):
    """The `reward` config: the task's rule or a judge for the outcome, and an optional process
    reward per chunk of `chunk_tokens` response tokens (rewards/process.py); the bounds of the
    scorers; and how the run treats verdicts that could not be reached (checker down, timeout,
    reward function raised or returned NaN, a judge's unreadable verdict): never trained on,
    counted per step, and above max_failed_fraction of a step's (or an evaluation's) samples they
    stop the run."""
    model_config = ConfigDict(extra="forbid")
    max_failed_fraction: float = Field(0.1, ge=0.0, le=1.0)
    timeout_s: float | None = Field(60.0, gt=0.0)  # per response and rule scorer; one still running fails
    limits: RewardLimits = RewardLimits()  # the built-in rewards' own bounds (math checker, sandbox)
    outcome: Literal["rule", "judge"] = RULE
    process: str | None = None  # null | judge | package.module:function (a rule over prefixes)
    chunk_tokens: int = Field(8, ge=1)
    process_weight: float = 1.0
    outcome_weight: float = 1.0
    judge_correct_at: float = Field(0.5, ge=0.0, le=1.0)  # an outcome judge's score counted correct
    judge_batch: int = Field(8, ge=1)  # responses per judge task

    @property
    def judged(self) -> ScoreParts:
        """What the judge pool scores (nothing: the run has no judge pool)."""
        return ScoreParts(outcome=self.outcome == JUDGE, process=self.process == JUDGE)

    @property
    def ruled(self) -> ScoreParts:
        """What the reward workers' rules score in training."""
        return ScoreParts(outcome=self.outcome == RULE, process=self.process_rule is not None)

    @property
    def process_rule(self) -> str | None:
        """The rule process reward's "package.module:function", when the process reward is a rule."""
        return None if self.process in (None, JUDGE) else self.process

    @model_validator(mode="after")
    def _check(self) -> RewardSection:
        if self.process_rule:
            get_process_fn(self.process_rule)  # an unknown rule fails now, not at the first step
        return self


@dataclass(frozen=True)
class Scorer:
    """One stop of the route: a pool of scoring actors and the parts it is asked for."""
    name: str  # its pool (reward, judge): logs and re-issue counts
    workers: list[Any]  # actor handles, each with score(batch, which, rows, parts)
    parts: ScoreParts
    per_call: int  # rows per call


def training_route(reward: RewardSection, rewarders: list[Any], judges: list[Any], chunk: int) -> list[Scorer]:
    """The scorers of an RL step's rollouts (`chunk`: rows per reward-worker call)."""
    route = [Scorer("reward", rewarders, reward.ruled, chunk),
             Scorer("judge", judges, reward.judged, reward.judge_batch)]
    return [s for s in route if s.parts]


def evaluation_route(rewarders: list[Any], chunk: int) -> list[Scorer]:
    """Held-out decoding is scored by the task's own rule: the figures compare across runs."""
    return [Scorer("reward", rewarders, ScoreParts(outcome=True), chunk)]


def step_rewards(reward: RewardSection, uses_value: bool, rows: list[RowMeta], scores: dict[Key, Score],
                 process: dict[Key, ProcessScore]) -> tuple[dict[Key, Score], dict[Key, list[float]]]:
    """The scores the advantages are computed from, and the per-chunk process scores a value model
    takes (placed on its tokens by the learner rank; empty without). Without a value model the
    process reward joins the outcome: outcome_weight·r + process_weight·Σ chunk scores."""
    if not process:
        return scores, {}
    if uses_value:  # per-chunk scores for the value model's recursions
        return scores, {r.key: process[r.key].scores for r in rows}
    return {k: replace(s, reward=reward.outcome_weight * s.reward + reward.process_weight * sum(process[k].scores))
            for k, s in scores.items()}, {}


class RewardFailureError(RuntimeError):
    """Too many reward verdicts failed: the reward (checker, sandbox, function, judge) is broken."""


def check_reward_failures(scores: Iterable[Score], max_fraction: float, where: str) -> None:
    """Warn about failed verdicts; stop the run (RewardFailureError) when more than `max_fraction`
    of them failed."""
    scores = list(scores)
    failed = [s for s in scores if s.failure is not None]
    if not failed:
        return
    kinds = ", ".join(f"{k}: {n}" for k, n in sorted(Counter(s.failure for s in failed).items()))
    summary = f"{where}: no reward verdict for {len(failed)} of {len(scores)} samples ({kinds})"
    if len(failed) / len(scores) > max_fraction:
        raise RewardFailureError(
            f"{summary}, more than reward.max_failed_fraction={max_fraction}; the reward is broken, not the "
            f"policy. First error: {failed[0].error or failed[0].failure}")
    log.warning("%s; left out of training. First error: %s", summary, failed[0].error or failed[0].failure)
