"""Group-relative advantages and the batch filters of docs/design.md §6.1 step 5."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field


class Sample(Protocol):
    """What advantages need of a response besides its reward: a Trajectory, or the driver's RowMeta."""
    finish_reason: str
    response_len: int


@dataclass
class ScoredGroup:
    """The G responses to one prompt with their rewards."""
    prompt_uid: str
    samples: list[Sample]
    rewards: list[float]
    correct: list[bool]


class AdvantageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Keep groups whose accuracy lies in [acc_low, acc_high] (the reference keeps 0.2-0.8).
    acc_low: float = Field(0.0, ge=0.0, le=1.0)
    acc_high: float = Field(1.0, ge=0.0, le=1.0)
    drop_zero_advantage: bool = True
    truncated_reward_zero: bool = False  # responses cut at max_new_tokens score 0
    # Dynamic sampling (DAPO's, verl's algorithm.filter_groups): while fewer than
    # trainer.prompts_per_step groups survive the filters, the step draws more prompts, at most this
    # many more rounds (0: off), so late steps, whose groups are mostly all right, still train on a
    # full batch. Each round draws about the missing groups over the step's kept share so far.
    refill_rounds: int = Field(0, ge=0)
    # What a group's centred rewards are divided by: "std", the group's std (GRPO); "none", nothing
    # (Dr. GRPO: dividing by the std weights near-unanimous groups, the easiest and hardest
    # prompts, 1.5x as much as a half-right group at G = 8).
    scale: Literal["std", "none"] = "std"


@dataclass(frozen=True)
class Filtered:
    """The step's samples the filters left out of training (groups that teach nothing), counted
    in the loss normalisation when algo.norm_over = "sampled": the same counts on every rank."""
    responses: int = 0
    tokens: int = 0  # their response tokens


@dataclass
class AdvantageResult:
    samples: list[Any] = field(default_factory=list)  # the kept groups' samples (as given in ScoredGroup)
    advantages: list[float] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> groups dropped
    # Per sample, its process reward's chunk scores for the value model (placed on its tokens by the
    # learner rank, rewards/process.py); None: outcome only.
    process_rewards: list[list[float]] | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # advantage_metrics of the batch
    filtered: Filtered = Filtered()

    @property
    def skip_reason(self) -> str | None:
        """Why an RL step has nothing to train on, or None."""
        if self.samples:
            return None
        return "every group was filtered out (" + ", ".join(f"{k}: {v}" for k, v in self.dropped.items()) + ")"


def group_advantages(groups: list[ScoredGroup], cfg: AdvantageConfig, target: int | None = None) -> AdvantageResult:
    """Â_i = (r_i - mean_G r) / (std_G r + 1e-6) with the population std (advantage.scale = "none":
    r_i - mean_G r); 0 when std = 0.

    `target`: the step trains on at most this many groups (dynamic sampling drew more): the first
    `target` kept ones; later ones the filters would keep are dropped as "surplus". The step's
    batch is then `target` groups: `filtered` counts only the first filtered groups, as many as
    kept ones are missing (None: every filtered group, the batch being every group given)."""
    out = AdvantageResult()
    stand_ins: list[list[Sample]] = []  # the filtered groups' samples, in order
    kept = 0
    for g in groups:
        rewards = torch.tensor(g.rewards, dtype=torch.float64)
        if not rewards.isfinite().all():  # it would make its whole group's advantages NaN
            k = int((~rewards.isfinite()).nonzero()[0])
            raise ValueError(f"prompt {g.prompt_uid}: reward {g.rewards[k]} of sample {k} is not finite (the "
                             f"reward route leaves a non-finite reward out as invalid_reward)")
        if cfg.truncated_reward_zero:
            truncated = torch.tensor([t.finish_reason == "length" for t in g.samples])
            rewards = rewards.masked_fill(truncated, 0.0)
        acc = sum(g.correct) / max(len(g.correct), 1)
        std = rewards.std(unbiased=False)
        adv = (torch.zeros_like(rewards) if std == 0 else
               (rewards - rewards.mean()) / (std + 1e-6 if cfg.scale == "std" else 1.0))
        reason = ("accuracy_band" if not cfg.acc_low <= acc <= cfg.acc_high
                  else "zero_advantage" if cfg.drop_zero_advantage and not adv.any()
                  else "surplus" if kept == target else None)
        if reason:
            out.dropped[reason] = out.dropped.get(reason, 0) + 1
            if reason != "surplus":
                stand_ins.append(g.samples)
            continue
        kept += 1
        out.samples += g.samples
        out.advantages += adv.tolist()
    counted = [s for ss in stand_ins[: None if target is None else target - kept] for s in ss]
    out.filtered = Filtered(len(counted), sum(s.response_len for s in counted))
    out.metrics = advantage_metrics(groups, out)
    return out


def advantage_metrics(groups: list[ScoredGroup], result: AdvantageResult) -> dict[str, float]:
    """What an RL user watches in a step's batch: the share of prompt groups that teach nothing
    (every sample right, or every one wrong: zero advantage), the share kept for training, and the
    mean / std / mean |Â| of the kept samples' advantages (group-normalised: mean ≈ 0, std ≈ 1
    while the kept groups are mixed). Shares are of every group given (with dynamic sampling,
    every group the step drew)."""
    n = max(len(groups), 1)
    all_right = sum(all(g.correct) for g in groups if g.correct)
    all_wrong = sum(not any(g.correct) for g in groups if g.correct)
    adv = torch.tensor(result.advantages, dtype=torch.float64)
    out = {"groups/all_correct_share": all_right / n, "groups/all_wrong_share": all_wrong / n,
           "groups/zero_advantage_share": result.dropped.get("zero_advantage", 0) / n,
           "groups/kept_share": 1.0 - sum(result.dropped.values()) / n if groups else 0.0}
    if result.advantages:
        out |= {"advantage/mean": float(adv.mean()), "advantage/std": float(adv.std(unbiased=False)),
                "advantage/abs_mean": float(adv.abs().mean())}
    return out
