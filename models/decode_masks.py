"""The sampler's attention masks as descriptions (`MaskSpec`, models/attention.py).

Canvas columns are absolute positions, so every mask the sampler needs is one of two shapes:

- `KeyEnd`: each row's queries see the keys before a per-row end column. A decode pass reads the
  cached prefix plus its query block; the fused pass that also rewrites the finished block has two
  query segments ([finished block | current block]) with their own ends, which is exactly
  block-causality for those two blocks. Full-attention canvases use one segment (end = canvas).
  The kernel gets a [rows, 1, 1, Tk] key-validity mask per segment: never [rows, Tq, Tk]. A
  decode pass names its key count and dtype, so those masks are built once, not in every layer,
  and additive (0 / -inf): SDPA would otherwise convert a boolean mask in every call.
- `BlockCausal`: a key is visible when its block is not after the query's block; the same for
  every row (prefill of prompt blocks, the uncached reference path), so one [Tq, Tk] mask.

Grouped-query attention is folded into the query length (the query heads sharing a K/V head
become one longer query) instead of SDPA's enable_gqa: the masked GPU kernels (memory-efficient
attention) do not take enable_gqa, and repeating K/V per query head would copy the cache.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


def _sdpa_grouped(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SDPA for q [N, H, Tq, D] over k/v [N, Hkv, Tk, D] (query head h reads K/V head h // G) with
    a bool mask [N or 1, 1, Tq or 1, Tk] that is the same for every head."""
    n, h, tq, d = q.shape
    g = h // k.shape[1]
    if g > 1:
        q = q.reshape(n, k.shape[1], g * tq, d)
        if mask.shape[2] > 1:
            mask = mask.repeat(1, 1, g, 1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).view(n, h, tq, d)


@dataclass(frozen=True)
class KeyEnd:
    ends: tuple[torch.Tensor, ...]  # one [rows] long tensor per query segment
    segment: int                    # queries per segment (the last one takes the rest)
    # Keys every layer reads, when the caller knows them (a decode pass): the per-segment masks are
    # then built once here, not in every layer, additive in `dtype` (the queries' dtype).
    keys: int | None = None
    dtype: torch.dtype = torch.float32
    valid: tuple[torch.Tensor, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        masks = () if self.keys is None else tuple(self._additive(end, self.keys) for end in self.ends)
        object.__setattr__(self, "valid", masks)

    def _additive(self, end: torch.Tensor, num_keys: int) -> torch.Tensor:
        # The values SDPA's own conversion of the boolean mask gives (0 where allowed, else -inf).
        full = torch.full((end.shape[0], 1, 1, num_keys), float("-inf"), dtype=self.dtype, device=end.device)
        return full.masked_fill_(self.key_valid(end, num_keys), 0.0)

    def key_valid(self, end: torch.Tensor, num_keys: int) -> torch.Tensor:
        return (torch.arange(num_keys, device=end.device)[None] < end[:, None])[:, None, None]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, enable_gqa: bool) -> torch.Tensor:
        outs = []
        for i, end in enumerate(self.ends):
            stop = None if i == len(self.ends) - 1 else (i + 1) * self.segment
            mask = self.valid[i] if self.keys == k.shape[2] else self.key_valid(end, k.shape[2])
            outs.append(_sdpa_grouped(q[:, :, i * self.segment:stop], k, v, mask))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)


@dataclass(frozen=True)
class BlockCausal:
    block_size: int

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, enable_gqa: bool) -> torch.Tensor:
        qb = torch.arange(q.shape[2], device=q.device) // self.block_size
        kb = torch.arange(k.shape[2], device=q.device) // self.block_size
        return _sdpa_grouped(q, k, v, (kb[None] <= qb[:, None])[None, None])
