"""Token-level policy/value loss terms. Each returns per-token values; normalisation is done by
per-token weights computed once for the whole step (`norm_weights` in learner/policy_update.py)."""
from __future__ import annotations

import torch


def ppo_clip(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, eps_low: float,
             eps_high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token -min(ρA, clip(ρ, 1-ε_low, 1+ε_high)A) and whether the clip was active."""
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * adv
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high) * adv
    return -torch.minimum(unclipped, clipped), (clipped < unclipped)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(π_θ || π_ref): exp(r) - r - 1 with r = ℓ_ref - ℓ_θ (≥ 0)."""
    r = ref_logp - logp
    return torch.exp(r) - r - 1


def truncated_is_weight(old_logp: torch.Tensor, sampler_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """min(π_old / π_sampler, cap): corrects for sampler/learner mismatch (e.g. bf16 rollouts)."""
    return torch.exp(old_logp - sampler_logp).clamp(max=cap)


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       eps: float) -> torch.Tensor:
    """½·max((V-R)², (V_old + clip(V-V_old, ±ε) - R)²) per token."""
    clipped = old_values + (values - old_values).clamp(-eps, eps)
    return 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
