"""The strategy registry: which masked slots a denoising pass commits (docs/design.md §5).

Every strategy ranks the masked slots of each row by a score and commits the top n_r of them;
strategies differ only in the score, in how n_r is chosen and in whether n_r is known before the
pass (`planned`: the static schedule, so the host need not read the device to know when a block is
done). Committed slots are never re-masked. This module is the only place that tells strategies
apart by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .params import SamplingParams


@dataclass(frozen=True)
class PassScores:
    """What one pass knows about the current block's slots ([R, S] each, read only where masked)."""

    masked: torch.Tensor
    confidence: torch.Tensor
    entropy: torch.Tensor
    rand: torch.Tensor | None  # per-slot uniforms, drawn only for a rule that `draws_random`
    planned: torch.Tensor      # [R] the static schedule's n_k for this pass


Ranking = Callable[[PassScores, SamplingParams], tuple[torch.Tensor, torch.Tensor]]  # (score, count)


@dataclass(frozen=True)
class CommitRule:
    rank: Ranking
    planned: bool = False       # commits per pass follow the static schedule
    draws_random: bool = False  # ranks by a hashed uniform per slot (rng stream 1)


def _slot_order(s: PassScores, p: SamplingParams) -> tuple[torch.Tensor, torch.Tensor]:
    slot = torch.arange(s.masked.shape[1], dtype=torch.float64, device=s.masked.device)
    return -slot.expand(s.masked.shape), s.planned


def _dynamic(s: PassScores, p: SamplingParams) -> tuple[torch.Tensor, torch.Tensor]:
    floor = s.planned if p.min_per_step is None else torch.full_like(s.planned, p.min_per_step)
    return s.confidence.double(), torch.maximum((s.masked & (s.confidence >= p.threshold)).sum(1), floor)


def _entropy_bounded(s: PassScores, p: SamplingParams) -> tuple[torch.Tensor, torch.Tensor]:
    ordered = torch.sort(torch.where(s.masked, s.entropy.double(), torch.inf), dim=1).values
    return -s.entropy.double(), (ordered.cumsum(1) <= p.entropy_bound).sum(1).clamp(min=1)


RULES: dict[str, CommitRule] = {
    "static": CommitRule(lambda s, p: (s.confidence.double(), s.planned), planned=True),
    "random": CommitRule(lambda s, p: (s.rand, s.planned), planned=True, draws_random=True),
    "sequential": CommitRule(_slot_order, planned=True),
    "dynamic": CommitRule(_dynamic),
    "entropy_bounded": CommitRule(_entropy_bounded),
}


def commit_rule(strategy: str) -> CommitRule:
    if strategy not in RULES:  # pydantic already restricts the names; this guards direct construction
        raise ValueError(f"unknown strategy {strategy!r}: choose one of {sorted(RULES)}")
    return RULES[strategy]


def static_schedule(masked_at_start: list[int], steps: int) -> list[list[int]]:
    """Per row, tokens per pass: the block's masked count split as evenly as possible over
    min(steps, masked) passes, remainder first (SDAR's schedule). Plain ints: the sampler's host
    knows every block's masked count without reading the device."""
    out = []
    for m in masked_at_start:
        passes = max(min(m, steps), 1)
        out.append([m // passes + (k < m % passes) if k < passes else 0 for k in range(steps)])
    return out


def choose_commits(rule: CommitRule, params: SamplingParams, scores: PassScores, last_pass: bool) -> torch.Tensor:
    """Commit mask [R, S] for one pass; the last pass of a block commits everything left."""
    masked = scores.masked
    left = masked.sum(1)
    score, count = rule.rank(scores, params)
    count = left if last_pass else torch.minimum(count, left)
    neg_inf = torch.full((), float("-inf"), dtype=torch.float64, device=masked.device)
    order = torch.argsort(torch.where(masked, score, neg_inf), dim=1, descending=True, stable=True)
    ranks = torch.arange(order.shape[1], device=masked.device).expand_as(order)
    return masked & (torch.empty_like(order).scatter_(1, order, ranks) < count[:, None])
