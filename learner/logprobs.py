"""Per-token log-probs of trained tokens under the current weights (same distribution the sampler drew from).

The vocabulary projection runs in chunks of trained tokens inside the model's forward (so ZeRO-3
still gathers the head): each chunk's fp32 logits give its log-sum-exp and picked logit, and are
dropped; backward recomputes them chunk by chunk. Peak logit memory is one chunk × vocabulary,
whatever the number of trained tokens. Entropy (a logged metric, no gradient) only when asked.
"""
from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .batching import MicroBatch

# fp32 logits per vocabulary-projection chunk. On a GPU 512 MiB: 883 tokens at a 151,936-token
# vocabulary (at 64 MiB a chunk was 110 tokens: matmuls too thin for the GPU, and under ZeRO-3 every
# chunk, and its recomputation in backward, gathers the head again). On a CPU 64 MiB: the matmul is
# already efficient there and the buffers come out of the host memory everything else shares.
LOGIT_CHUNK_ELEMENTS = {"cuda": 1 << 27, "cpu": 1 << 24}


def chunk_logprobs(logits: torch.Tensor, targets: torch.Tensor, mask_id: int, temperature: float,
                   with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(target) [m] (and entropy [m], no gradient, or an empty tensor) from raw logits [m, V];
    the mask token is banned exactly as in the sampler. Works in place on `logits` (a Linear does
    not keep its output for backward), so a chunk costs about three [m, V] fp32 buffers."""
    z = logits.float()
    if temperature != 1.0:
        z = z.div_(temperature)
    z[:, mask_id] = float("-inf")  # a Python index: no host-to-device copy of the id per chunk
    lse = torch.logsumexp(z, dim=-1)
    picked = z.gather(-1, targets[:, None]).squeeze(-1) - lse
    if not with_entropy:
        return picked, z.new_empty(0)
    with torch.no_grad():  # H = lse - Σ p·z; the banned column has p = 0 (and z = -inf: NaN, zeroed)
        pz = torch.exp(z - lse[:, None]).mul_(z)
        pz[:, mask_id] = 0.0
        entropy = lse - pz.sum(-1)
    return picked, entropy


def _head(h: torch.Tensor, lm_head: nn.Module, targets: torch.Tensor, mask_id: int, temperature: float,
          with_entropy: bool, chunk: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    def one(hc: torch.Tensor, tc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return chunk_logprobs(lm_head(hc), tc, mask_id, temperature, with_entropy)

    elements = LOGIT_CHUNK_ELEMENTS.get(h.device.type, LOGIT_CHUNK_ELEMENTS["cpu"])
    chunk = chunk or max(1, elements // lm_head.out_features)
    parts = []
    for s in range(0, h.shape[0], chunk):
        args = (h[s:s + chunk], targets[s:s + chunk])
        parts.append(checkpoint(one, *args, use_reentrant=False) if torch.is_grad_enabled() else one(*args))
    if not parts:
        return h.new_zeros(0, dtype=torch.float32), h.new_zeros(0, dtype=torch.float32)
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def token_logprobs(model: nn.Module, mb: MicroBatch, mask_id: int, temperature: float = 1.0,
                   with_entropy: bool = False, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """chunk: trained tokens per vocabulary chunk (default: LOGIT_CHUNK_ELEMENTS of the device / vocabulary)."""
    head = partial(_head, targets=mb.targets, mask_id=mask_id, temperature=temperature,
                   with_entropy=with_entropy, chunk=chunk)
    picked, entropy = model(mb.input_ids, mb.position_ids, mb.attn_mask, logits_at=mb.logits_at, head=head,
                            **mb.model_inputs())
    return picked, entropy if with_entropy else None
