"""A micro-batch's attention mask as a per-slot description (a `MaskSpec`, models/attention.py).

Every slot of a row carries a copy id, an absolute block and a validity bit:

- copy 0 is the clean copy: it attends block-causally (keys of its own and earlier blocks);
- copy c > 0 is a noisy copy: it sees clean keys of strictly earlier blocks and the slots of its
  own copy c in its own block (bidirectionally), nothing else;
- invalid (padding) keys are hidden, and every slot sees itself so padding stays finite.

That one rule covers every layout the learner builds: TraceRL rows with one noisy copy per round
(copy 1) or all rounds packed after one clean copy (copy r + 1 for round r), SFT block rows,
block-causal flat rows (all clean) and full-attention rows (all copy 1, block 0).

The [rows, T, T] mask is never built for a whole micro-batch: on CUDA FlexAttention evaluates the
rule block-sparsely; elsewhere attention runs in query chunks, each over only the keys some query
of the chunk may see, with the chunk recomputed in backward instead of kept.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def allowed(q_copy: torch.Tensor, q_block: torch.Tensor, k_copy: torch.Tensor, k_block: torch.Tensor,
            k_valid: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """The rule on broadcastable per-query / per-key tensors (also FlexAttention's mask_mod body)."""
    clean_q, clean_k = q_copy == 0, k_copy == 0
    see = (clean_k & ((k_block < q_block) | (clean_q & (k_block == q_block)))) | (
        ~clean_q & (k_copy == q_copy) & (k_block == q_block))
    return (see & k_valid) | same


_flex: Any = None  # compiled flex_attention, built on first CUDA use


@dataclass
class SlotMask:
    copy: torch.Tensor   # [R, T] long: 0 = clean, c > 0 = noisy copy c
    block: torch.Tensor  # [R, T] long: absolute block of the slot
    valid: torch.Tensor  # [R, T] bool: False = padding
    query_chunk: int = 512  # CPU path: queries per chunk (mask memory R·chunk·T bools)
    _block_mask: Any = field(default=None, repr=False, compare=False)

    def to(self, device: torch.device | str) -> "SlotMask":
        return replace(self, copy=self.copy.to(device), block=self.block.to(device),
                       valid=self.valid.to(device), _block_mask=None)

    def rows(self, start: int = 0, end: int | None = None, keys: torch.Tensor | None = None) -> torch.Tensor:
        """Bool [R, end - start, K]: what queries start..end may attend among `keys` (default all T)."""
        end = self.copy.shape[1] if end is None else end
        q = torch.arange(start, end, device=self.copy.device)
        k = torch.arange(self.copy.shape[1], device=self.copy.device) if keys is None else keys
        return allowed(self.copy[:, start:end, None], self.block[:, start:end, None], self.copy[:, None, k],
                       self.block[:, None, k], self.valid[:, None, k], (q[:, None] == k[None, :])[None])

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, enable_gqa: bool) -> torch.Tensor:
        if q.shape[2] != self.copy.shape[1] or k.shape[2] != self.copy.shape[1]:
            raise ValueError(f"SlotMask describes {self.copy.shape[1]} slots, got q {q.shape[2]} / k {k.shape[2]}")
        if q.is_cuda:
            return self._flex_attend(q, k, v, enable_gqa)
        T, out = q.shape[2], []
        for start in range(0, T, self.query_chunk):
            end = min(start + self.query_chunk, T)
            if torch.is_grad_enabled() and T > self.query_chunk:
                # Keep nothing per chunk (their masks would add up to R·T·T): backward rebuilds them.
                out.append(checkpoint(self._chunk, q[:, :, start:end], k, v, start, end, enable_gqa,
                                      use_reentrant=False))
            else:
                out.append(self._chunk(q[:, :, start:end], k, v, start, end, enable_gqa))
        return torch.cat(out, dim=2)

    def keys(self, start: int, end: int) -> torch.Tensor:
        """The keys some query start..end may attend (ascending), found per key in O(R·T) rather
        than from the [R, end - start, T] mask: a clean key below the queries' top block (or at a
        clean query's top block), a noisy key whose (copy, block) a noisy query has, the diagonal."""
        qc, qb = self.copy[:, start:end], self.block[:, start:end]
        clean_q, clean_k = qc == 0, self.copy == 0
        top = qb.max(dim=1, keepdim=True).values
        top_clean = torch.where(clean_q, qb, -1).max(dim=1, keepdim=True).values
        see = clean_k & ((self.block < top) | (self.block <= top_clean))
        span = int(self.block.max()) + 1
        row = torch.arange(qc.shape[0], device=qc.device)[:, None] * (int(self.copy.max()) + 1)
        pair = (row + self.copy) * span + self.block  # (row, copy, block) as one id
        see |= ~clean_k & torch.isin(pair, ((row + qc) * span + qb)[~clean_q])
        need = (see & self.valid).any(dim=0)
        need[start:end] = True
        return need.nonzero().squeeze(1)

    def _chunk(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int, end: int,
               enable_gqa: bool) -> torch.Tensor:
        keys = self.keys(start, end)  # block sparsity: the mask is built over these keys only
        mask = self.rows(start, end, keys)
        if keys.numel() < self.copy.shape[1]:
            k, v = k.index_select(2, keys), v.index_select(2, keys)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], enable_gqa=enable_gqa)

    def mask_mod(self) -> Callable:
        """The rule as FlexAttention's mask_mod(batch, head, query, key)."""
        copy, block, valid = self.copy, self.block, self.valid

        def mask_mod(b, h, qi, ki):
            return allowed(copy[b, qi], block[b, qi], copy[b, ki], block[b, ki], valid[b, ki], qi == ki)

        return mask_mod

    def _flex_attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, enable_gqa: bool) -> torch.Tensor:
        global _flex
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        if _flex is None:
            _flex = torch.compile(flex_attention)
        if self._block_mask is None:  # once per micro-batch, shared by every layer
            R, T = self.copy.shape
            self._block_mask = create_block_mask(self.mask_mod(), R, None, T, T, device=q.device, _compile=True)
        return _flex(q, k, v, block_mask=self._block_mask, enable_gqa=enable_gqa)
