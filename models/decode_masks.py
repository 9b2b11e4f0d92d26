"""The sampler's attention masks as descriptions (`MaskSpec`, models/attention.py).

Canvas columns are absolute positions, so every mask the sampler needs is one of two shapes:

- `KeyEnd`: each row's queries see the keys before a per-row end column. A decode pass reads the
  cached prefix plus its query block; the fused pass that also rewrites the finished block has two
  query segments ([finished block | current block]) with their own ends, which is exactly
  block-causality for those two blocks. Full-attention canvases use one segment (end = canvas).
  One kernel call covers every segment, so the cache's K/V are read once per layer: the mask is
  [rows, 1, 1, Tk] for one segment (whatever the query count: a full-attention canvas) and
  [rows, 1, 2B x G, Tk] for the two segments of a first pass (G query heads per K/V head, the
  grouped-query folding below; two calls, each reading the K/V, took 1.4x as long at batch 32 on
  a CPU; a GPU's decode attention is bound by that read). A decode pass names its key count and
  dtype, so the mask is built once, not in every layer, and additive (0 / -inf): SDPA would
  otherwise convert a boolean mask in every call.
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


def _grouped(mask: torch.Tensor, groups: int) -> torch.Tensor:
    """A mask [N or 1, 1, Tq or 1, Tk] for the queries `_sdpa_grouped` folds (each query row once per
    query head of a group)."""
    return mask.repeat(1, 1, groups, 1) if groups > 1 and mask.shape[2] > 1 else mask


def _sdpa_grouped(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SDPA for q [N, H, Tq, D] over k/v [N, Hkv, Tk, D] (query head h reads K/V head h // G) with
    a mask [N or 1, 1, G * Tq or 1, Tk] (`_grouped`) that is the same for every head."""
    n, h, tq, d = q.shape
    q = q.reshape(n, k.shape[1], h // k.shape[1] * tq, d)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).view(n, h, tq, d)


@dataclass(frozen=True)
class KeyEnd:
    ends: tuple[torch.Tensor, ...]  # one [rows] long tensor per query segment
    segment: int                    # queries per segment (the last one takes the rest)
    # Keys every layer reads, when the caller knows them (a decode pass, every segment `segment`
    # long): the mask is then built once here, not in every layer, additive in `dtype` (the
    # queries' dtype) and already repeated for `groups` query heads per K/V head.
    keys: int | None = None
    dtype: torch.dtype = torch.float32
    groups: int = 1
    valid: torch.Tensor | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        valid = None
        if self.keys is not None:
            allowed = self.key_valid(self._query_ends(self.segment * len(self.ends)), self.keys)
            # The values SDPA's own conversion of the boolean mask gives (0 where allowed, else -inf).
            full = torch.full(allowed.shape, float("-inf"), dtype=self.dtype, device=allowed.device)
            valid = _grouped(full.masked_fill_(allowed, 0.0), self.groups)
        object.__setattr__(self, "valid", valid)

    def _query_ends(self, queries: int) -> torch.Tensor:
        """[rows, Tq] each query's key end; [rows, 1] for one segment (the same for all its queries)."""
        if len(self.ends) == 1:
            return self.ends[0][:, None]
        sizes = [self.segment] * (len(self.ends) - 1)
        sizes.append(queries - sum(sizes))
        return torch.cat([end[:, None].expand(-1, size) for end, size in zip(self.ends, sizes)], dim=1)

    @staticmethod
    def key_valid(query_ends: torch.Tensor, num_keys: int) -> torch.Tensor:
        """bool [rows, 1, Tq or 1, Tk]: a query sees the keys before its end."""
        return (torch.arange(num_keys, device=query_ends.device) < query_ends[..., None])[:, None]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, enable_gqa: bool) -> torch.Tensor:
        groups = q.shape[1] // k.shape[1]
        mask = self.valid
        if mask is None or self.keys != k.shape[2] or mask.shape[2] not in (1, groups * q.shape[2]):
            mask = _grouped(self.key_valid(self._query_ends(q.shape[2]), k.shape[2]), groups)
        return _sdpa_grouped(q, k, v, mask)


@dataclass(frozen=True)
class BlockCausal:
    block_size: int

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, enable_gqa: bool) -> torch.Tensor:
        qb = torch.arange(q.shape[2], device=q.device) // self.block_size
        kb = torch.arange(k.shape[2], device=q.device) // self.block_size
        mask = (kb[None] <= qb[:, None])[None, None]
        return _sdpa_grouped(q, k, v, _grouped(mask, q.shape[1] // k.shape[1]))
