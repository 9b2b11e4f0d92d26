"""Per-token log-probs of trained tokens under the current weights (same distribution the sampler drew from)."""
from __future__ import annotations

import torch
from torch import nn

from .batching import MicroBatch


def masked_logits(model: nn.Module, mb: MicroBatch, mask_id: int, temperature: float = 1.0) -> torch.Tensor:
    """[M, V] float32 logits at the trained slots; the mask token is banned exactly as in the sampler."""
    logits = model(mb.input_ids, mb.position_ids, mb.attn_mask, logits_at=mb.logits_at).float()
    if temperature > 0:
        logits = logits / temperature
    banned = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    banned[mask_id] = True
    return logits.masked_fill(banned, float("-inf"))


def token_logprobs(model: nn.Module, mb: MicroBatch, mask_id: int, temperature: float = 1.0,
                   with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    logp = torch.log_softmax(masked_logits(model, mb, mask_id, temperature), dim=-1)
    picked = logp.gather(-1, mb.targets[:, None]).squeeze(-1)
    if not with_entropy:
        return picked, None
    p = logp.exp()
    return picked, -(p * logp.masked_fill(p == 0, 0.0)).sum(-1)
