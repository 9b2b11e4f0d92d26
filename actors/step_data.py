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
from rollout.trajectory_batch import RowMeta

log = logging.getLogger(__name__)


def records_for(uids: list[str], prompt_ids: list[list[int]], samples: int) -> list[PromptRecord]:
    """Every prompt `samples` times; a prompt's samples stay adjacent (same shard, shared prefix)."""
    return [PromptRecord(uid, ids, k) for uid, ids in zip(uids, prompt_ids) for k in range(samples)]


class RewardFailureError(RuntimeError):
    """Too many reward verdicts failed: the reward (checker, sandbox, function) is broken."""


def to_groups(samples: list[RowMeta], scores: dict[tuple[str, int], Score]) -> list[ScoredGroup]:
    """One ScoredGroup per prompt uid, samples ordered by index, groups in first-seen order.
    Samples without a verdict (Score.failure) are left out: their 0.0 is no judgement."""
    by_uid: dict[str, list[RowMeta]] = defaultdict(list)
    for m in samples:
        if scores[m.key].failure is None:
            by_uid[m.prompt_uid].append(m)
    groups = []
    for uid, ms in by_uid.items():
        ms.sort(key=lambda m: m.sample_idx)
        s = [scores[m.key] for m in ms]
        groups.append(ScoredGroup(uid, ms, [x.reward for x in s], [x.correct for x in s]))
    return groups


def correct_only(samples: list[RowMeta], scores: dict[tuple[str, int], Score]) -> AdvantageResult:
    """sft_trace's batch: the correct rollouts, each with weight 1."""
    kept = [m for m in samples if scores[m.key].correct]
    return AdvantageResult(kept, [1.0] * len(kept), {"no_correct_sample": len({m.prompt_uid for m in samples})
                                                      - len({m.prompt_uid for m in kept})})


def learner_shards(adv: AdvantageResult, n: int) -> list[AdvantageResult]:
    """Each rank's rows with their advantages (and process rewards), longest first, round robin:
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


def rollout_metrics(samples: list[RowMeta], scores: dict[tuple[str, int], Score], seconds: float,
                    version: int, prefix: str = "") -> dict[str, float]:
    lens = np.array([m.response_len for m in samples], dtype=float)
    judged = [m for m in samples if scores[m.key].failure is None]
    # Reward and accuracy are over the samples that got a verdict; failed ones are counted apart.
    rewards = np.array([scores[m.key].reward for m in judged])
    correct = np.array([scores[m.key].correct for m in judged], dtype=float)
    forwards = sum(m.num_forwards for m in samples)
    by_prompt: dict[str, bool] = defaultdict(bool)
    for m, c in zip(judged, correct):
        by_prompt[m.prompt_uid] |= bool(c)
    nan = float("nan")  # every verdict failed: no figure, rather than a made-up 0
    # accuracy is avg@k over the k samples per prompt; pass_at_k: some sample of the prompt is correct.
    out = {"reward_mean": rewards.mean() if judged else nan, "reward_std": rewards.std() if judged else nan,
           "accuracy": correct.mean() if judged else nan,
           "pass_at_k": np.mean(list(by_prompt.values())) if judged else nan,
           "response_len": lens.mean(), "tokens_per_forward": lens.sum() / max(forwards, 1),
           "rollout_tokens_per_s": lens.sum() / max(seconds, 1e-9), "samples": float(len(samples)),
           "prompts": float(len({m.prompt_uid for m in samples})),
           "staleness": float(np.mean([version - m.policy_version for m in samples])),
           **failure_metrics(scores[m.key] for m in samples)}
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


def update_metrics(stats: dict[str, Any], samples: list[RowMeta], seconds: float) -> dict[str, float]:
    tokens = sum(m.response_len for m in samples)
    return {**{f"learner/{k}": float(v) for k, v in stats.items()},
            "learner_tokens_per_s": tokens / max(seconds, 1e-9), "trained_samples": float(len(samples))}
