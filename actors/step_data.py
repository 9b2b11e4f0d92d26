"""Pure helpers the driver uses between stages: prompt records, groups, learner shards, metrics."""
from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

from learner.advantages import AdvantageResult, ScoredGroup
from rewards.result import Score
from rollout.requests import PromptRecord
from rollout.trajectory import Trajectory

log = logging.getLogger(__name__)


def records_for(uids: list[str], prompt_ids: list[list[int]], samples: int) -> list[PromptRecord]:
    """Every prompt `samples` times; a prompt's samples stay adjacent (same shard, shared prefix)."""
    return [PromptRecord(uid, ids, k) for uid, ids in zip(uids, prompt_ids) for k in range(samples)]


class RewardFailureError(RuntimeError):
    """Too many reward verdicts failed: the reward (checker, sandbox, function) is broken."""


def to_groups(trajs: list[Trajectory], scores: dict[tuple[str, int], Score]) -> list[ScoredGroup]:
    """One ScoredGroup per prompt uid, samples ordered by index, groups in first-seen order.
    Samples without a verdict (Score.failure) are left out: their 0.0 is no judgement."""
    by_uid: dict[str, list[Trajectory]] = defaultdict(list)
    for traj in trajs:
        if scores[(traj.prompt_uid, traj.sample_idx)].failure is None:
            by_uid[traj.prompt_uid].append(traj)
    groups = []
    for uid, ts in by_uid.items():
        ts.sort(key=lambda traj: traj.sample_idx)
        s = [scores[(uid, traj.sample_idx)] for traj in ts]
        groups.append(ScoredGroup(uid, ts, [x.reward for x in s], [x.correct for x in s]))
    return groups


def correct_only(trajs: list[Trajectory], scores: dict[tuple[str, int], Score]) -> AdvantageResult:
    """sft_trace's batch: the correct rollouts, each with weight 1."""
    kept = [traj for traj in trajs if scores[(traj.prompt_uid, traj.sample_idx)].correct]
    return AdvantageResult(kept, [1.0] * len(kept), {"no_correct_sample": len({traj.prompt_uid for traj in trajs})
                                                      - len({traj.prompt_uid for traj in kept})})


def learner_shards(trajs: list[Trajectory], advantages: list[float], n: int) -> list[tuple[list, list]]:
    """Longest first, round robin: ranks get similar token counts (the updater pads batch counts)."""
    order = sorted(range(len(trajs)), key=lambda i: -(len(trajs[i].prompt_ids) + len(trajs[i].response_ids)))
    shards: list[tuple[list, list]] = [([], []) for _ in range(n)]
    for j, i in enumerate(order):
        shards[j % n][0].append(trajs[i])
        shards[j % n][1].append(advantages[i])
    return shards


def rollout_metrics(trajs: list[Trajectory], scores: dict[tuple[str, int], Score], seconds: float,
                    version: int, prefix: str = "") -> dict[str, float]:
    lens = np.array([len(traj.response_ids) for traj in trajs], dtype=float)
    judged = [traj for traj in trajs if scores[(traj.prompt_uid, traj.sample_idx)].failure is None]
    # Reward and accuracy are over the samples that got a verdict; failed ones are counted apart.
    rewards = np.array([scores[(traj.prompt_uid, traj.sample_idx)].reward for traj in judged])
    correct = np.array([scores[(traj.prompt_uid, traj.sample_idx)].correct for traj in judged], dtype=float)
    forwards = sum(traj.num_forwards for traj in trajs)
    by_prompt: dict[str, bool] = defaultdict(bool)
    for traj, c in zip(judged, correct):
        by_prompt[traj.prompt_uid] |= bool(c)
    nan = float("nan")  # every verdict failed: no figure, rather than a made-up 0
    # accuracy is avg@k over the k samples per prompt; pass_at_k: some sample of the prompt is correct.
    out = {"reward_mean": rewards.mean() if judged else nan, "reward_std": rewards.std() if judged else nan,
           "accuracy": correct.mean() if judged else nan,
           "pass_at_k": np.mean(list(by_prompt.values())) if judged else nan,
           "response_len": lens.mean(), "tokens_per_forward": lens.sum() / max(forwards, 1),
           "rollout_tokens_per_s": lens.sum() / max(seconds, 1e-9), "samples": float(len(trajs)),
           "prompts": float(len({traj.prompt_uid for traj in trajs})),
           "staleness": float(np.mean([version - traj.policy_version for traj in trajs])),
           **failure_metrics(scores[(traj.prompt_uid, traj.sample_idx)] for traj in trajs)}
    return {prefix + k: float(v) for k, v in out.items()}


def failure_metrics(scores: Iterable[Score]) -> dict[str, float]:
    """reward_failed (count), reward_failed_fraction, and reward_failed/<failure> per kind."""
    scores = list(scores)
    kinds = Counter(s.failure for s in scores if s.failure is not None)
    failed = sum(kinds.values())
    return {"reward_failed": float(failed), "reward_failed_fraction": failed / max(len(scores), 1),
            **{f"reward_failed/{kind}": float(n) for kind, n in sorted(kinds.items())}}


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


def update_metrics(stats: dict[str, Any], trajs: list[Trajectory], seconds: float) -> dict[str, float]:
    tokens = sum(len(traj.response_ids) for traj in trajs)
    return {**{f"learner/{k}": float(v) for k, v in stats.items()},
            "learner_tokens_per_s": tokens / max(seconds, 1e-9), "trained_samples": float(len(trajs))}
