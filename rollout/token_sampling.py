"""Draw one candidate per masked slot: temperature, top-k, top-p, inverse-CDF on a given uniform."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Candidates:
    tokens: torch.Tensor      # [M] sampled ids
    logprobs: torch.Tensor    # [M] log-prob of the sampled id under the sampling distribution
    confidence: torch.Tensor  # [M] its probability (what confidence-based strategies rank by)
    entropy: torch.Tensor     # [M] entropy of the sampling distribution


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """The sampling distribution's logits (float32). temperature 0 keeps the raw logits."""
    logits = logits.float()
    if temperature > 0:
        logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token once the mass before it already reaches top_p (the top token always stays).
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_candidates(logits: torch.Tensor, u: torch.Tensor, temperature: float, top_k: int,
                      top_p: float, banned_id: int) -> Candidates:
    """logits [M, V], u [M] float64 uniforms. `banned_id` (the mask token) is never sampled."""
    logits = logits.float().clone()
    logits[:, banned_id] = float("-inf")
    logp = torch.log_softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)
    probs = logp.exp()
    if temperature == 0:
        tokens = probs.argmax(-1)
    else:
        cdf = probs.double().cumsum(-1)
        tokens = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1)).squeeze(-1)
        tokens = tokens.clamp_(max=logits.shape[-1] - 1)
        # A uniform landing exactly on a zero-probability bucket edge must not pick that bucket.
        bad = probs.gather(-1, tokens[:, None]).squeeze(-1) == 0
        if bad.any():
            tokens[bad] = probs[bad].argmax(-1)
    token_logp = logp.gather(-1, tokens[:, None]).squeeze(-1)
    entropy = -(probs * logp.masked_fill(probs == 0, 0.0)).sum(-1)
    return Candidates(tokens, token_logp, token_logp.exp(), entropy)
