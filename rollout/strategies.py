"""Which masked slots a denoising pass commits (docs/design.md §5).

Every strategy ranks the masked slots of each row by a score and commits the top n_r of them;
strategies differ only in the score and in how n_r is chosen. Committed slots are never re-masked.
"""
from __future__ import annotations

import torch

from .params import SamplingParams


def static_schedule(masked_at_start: list[int], steps: int) -> list[list[int]]:
    """Per row, tokens per pass: the block's masked count split as evenly as possible over
    min(steps, masked) passes, remainder first (SDAR's schedule). Plain ints: the sampler's host
    knows every block's masked count without reading the device."""
    out = []
    for m in masked_at_start:
        passes = max(min(m, steps), 1)
        out.append([m // passes + (k < m % passes) if k < passes else 0 for k in range(steps)])
    return out


def choose_commits(params: SamplingParams, masked: torch.Tensor, confidence: torch.Tensor,
                   entropy: torch.Tensor, rand: torch.Tensor | None, planned: torch.Tensor,
                   last_pass: bool) -> torch.Tensor:
    """Commit mask [R, S] for one pass.

    masked: [R, S] slots still masked; confidence/entropy/rand: [R, S] (only read where masked;
    rand is drawn only for the random strategy, None otherwise);
    planned: [R] the static schedule's n_k for this pass; last_pass: commit everything left.
    """
    left = masked.sum(1)
    dev = masked.device
    neg_inf = torch.full((), float("-inf"), dtype=torch.float64, device=dev)
    slot = torch.arange(masked.shape[1], dtype=torch.float64, device=dev)
    if params.strategy == "static":
        score, count = confidence.double(), planned
    elif params.strategy == "random":
        score, count = rand, planned
    elif params.strategy == "sequential":
        score, count = -slot.expand(masked.shape), planned
    elif params.strategy == "dynamic":
        score = confidence.double()
        floor = planned if params.min_per_step is None else torch.full_like(left, params.min_per_step)
        count = torch.maximum((masked & (confidence >= params.threshold)).sum(1), floor)
    elif params.strategy == "entropy_bounded":
        score = -entropy.double()
        ordered = torch.sort(torch.where(masked, entropy.double(), torch.inf), dim=1).values
        count = (ordered.cumsum(1) <= params.entropy_bound).sum(1).clamp(min=1)
    else:  # pydantic already restricts the names; this guards direct construction
        raise ValueError(f"unknown strategy {params.strategy!r}")
    if last_pass:
        count = left
    count = torch.minimum(count, left)
    score = torch.where(masked, score, neg_inf)
    order = torch.argsort(score, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=dev).expand_as(order))
    return masked & (rank < count[:, None])
