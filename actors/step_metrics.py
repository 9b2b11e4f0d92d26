"""Every figure a step logs, computed in one place from what the step's phases hand on: a new
metric is one more entry here (docs/design.md §8.7)."""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

from learner.advantages import AdvantageResult
from rewards.process import ProcessScore
from rewards.result import Score
from rollout.trajectory_batch import RowMeta

from .reward_route import Key, RewardSection
from .step_batch import StepBatch


def rollout_metrics(rows: list[RowMeta], scores: dict[tuple[str, int], Score], seconds: float,
                    version: int, prefix: str = "") -> dict[str, float]:
    """Reward, accuracy (avg@k), pass@k, lengths, speed and staleness of decoded, scored rows."""
    lens = np.array([m.response_len for m in rows], dtype=float)
    judged = [m for m in rows if scores[m.key].failure is None]
    # Reward and accuracy are over the samples that got a verdict; failed ones are counted apart.
    rewards = np.array([scores[m.key].reward for m in judged])
    correct = np.array([scores[m.key].correct for m in judged], dtype=float)
    forwards = sum(m.num_forwards for m in rows)
    by_prompt: dict[str, bool] = defaultdict(bool)
    for m, c in zip(judged, correct):
        by_prompt[m.prompt_uid] |= bool(c)
    nan = float("nan")  # every verdict failed: no figure, rather than a made-up 0
    # accuracy is avg@k over the k samples per prompt; pass_at_k: some sample of the prompt is correct.
    out = {"reward_mean": rewards.mean() if judged else nan, "reward_std": rewards.std() if judged else nan,
           "accuracy": correct.mean() if judged else nan,
           "pass_at_k": np.mean(list(by_prompt.values())) if judged else nan,
           "response_len": lens.mean(), "tokens_per_forward": lens.sum() / max(forwards, 1),
           "rollout_tokens_per_s": lens.sum() / max(seconds, 1e-9), "samples": float(len(rows)),
           "prompts": float(len({m.prompt_uid for m in rows})),
           "staleness": float(np.mean([version - m.policy_version for m in rows])),
           **failure_metrics(scores[m.key] for m in rows)}
    return {prefix + k: float(v) for k, v in out.items()}


def failure_metrics(scores: Iterable[Score]) -> dict[str, float]:
    """reward_failed (count), reward_failed_fraction, and reward_failed/<failure> per kind."""
    scores = list(scores)
    kinds = Counter(s.failure for s in scores if s.failure is not None)
    failed = sum(kinds.values())
    return {"reward_failed": float(failed), "reward_failed_fraction": failed / max(len(scores), 1),
            **{f"reward_failed/{kind}": float(n) for kind, n in sorted(kinds.items())}}


def reward_metrics(reward: RewardSection, rows: list[RowMeta], scores: dict[Key, Score],
                   process: dict[Key, ProcessScore]) -> dict[str, float]:
    """The process reward's and the judge's figures, from the scorers' answers (none without either)."""
    if not (reward.judged or reward.process):
        return {}
    m: dict[str, float] = {}
    failures = sum(len(process[k].failures) for k in process)
    if reward.judged.outcome:
        failures += sum(s.failure is not None for s in scores.values())
        m["judge/outcome_mean"] = float(np.mean([scores[r.key].reward for r in rows]))
    if process:
        every = [x for r in rows for x in process[r.key].scores]
        m["process/reward_mean"] = float(np.mean(every)) if every else 0.0
        m["process/chunks_per_response"] = len(every) / max(len(process), 1)
    m["judge/failures"] = float(failures)
    return m


def batch_metrics(batch: StepBatch, version: int) -> dict[str, float]:
    """The rollout phase's figures: rows, rewards (and the process reward's), re-issued work."""
    return {**rollout_metrics(batch.rows, batch.scores, batch.rollout_s, version), **batch.reward_metrics,
            "reissued": float(batch.reissued)}


def advantage_step_metrics(adv: AdvantageResult) -> dict[str, float]:
    """The advantage phase's figures: groups dropped per reason, the batch's group shares and
    advantage statistics (learner.advantages.advantage_metrics), whether the update was skipped."""
    m = {f"dropped_groups/{k}": float(v) for k, v in adv.dropped.items()} | adv.metrics
    return m | ({"skipped": 1.0} if adv.skip_reason else {})


def update_metrics(stats: dict[str, Any], trained: list[RowMeta], seconds: float) -> dict[str, float]:
    """The learner's figures (rank 0's are global) and its speed."""
    tokens = sum(m.response_len for m in trained)
    return {**learner_metrics(stats), "learner_tokens_per_s": tokens / max(seconds, 1e-9),
            "trained_samples": float(len(trained))}


def learner_metrics(stats: dict[str, Any]) -> dict[str, float]:
    return {f"learner/{k}": float(v) for k, v in stats.items()}


def step_end_metrics(seconds: dict[str, float], version: int) -> dict[str, float]:
    """Every step's phase seconds (sync_s even when nothing was synced) and the policy version."""
    return {**seconds, "sync_s": seconds.get("sync_s", 0.0), "version": float(version)}
