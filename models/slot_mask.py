"""A micro-batch's attention mask as a per-slot description (a `MaskSpec`, models/attention.py).

Every slot of a row carries a copy id, an absolute block and a validity bit:

- copy 0 is the clean copy: it attends block-causally (keys of its own and earlier blocks);
- copy c > 0 is a noisy copy: it sees clean keys of strictly earlier blocks and the slots of its
  own copy c in its own block (bidirectionally), nothing else;
- invalid (padding) keys are hidden, and every slot sees itself so padding stays finite.

That one rule covers every layout the learner builds: TraceRL rows with one noisy copy per round
(copy 1) or all rounds packed after one clean copy (copy r + 1 for round r), SFT block rows,
block-causal flat rows (all clean) and full-attention rows (all copy 1, block 0).

The [rows, T, T] mask is never built for a whole micro-batch. Two kernels evaluate the rule:
"flex", FlexAttention over a block mask, compiled once per shape class (models/slot_flex.py), and
"chunked", attention in query chunks, each over only the keys some query of the chunk may see,
with the chunk recomputed in backward instead of kept. By default CUDA runs flex and other devices
run chunked; flex on CPU runs only without gradients (torch has no CPU FlexAttention backward).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F


def visible(q_lim: torch.Tensor, q_pair: torch.Tensor, k_lim: torch.Tensor, k_pair: torch.Tensor) -> torch.Tensor:
    """The rule on broadcastable per-query / per-key codes (`SlotMask.__post_init__`): three
    elementwise passes over the mask. Padding queries' diagonal comes on top."""
    return (k_lim < q_lim) | (k_pair == q_pair)


KERNELS = ("flex", "chunked")


@dataclass
class SlotMask:
    copy: torch.Tensor   # [R, T] long: 0 = clean, c > 0 = noisy copy c
    block: torch.Tensor  # [R, T] long: absolute block of the slot
    valid: torch.Tensor  # [R, T] bool: False = padding
    query_chunk: int = 256  # chunked kernel: queries per chunk (mask memory R·chunk·T bools)
    kernel: str | None = None  # one of KERNELS; None: flex on CUDA, chunked elsewhere
    _flex_plan: Any = field(default=None, repr=False, compare=False)
    _keys: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kernel not in (None, *KERNELS):
            raise ValueError(f"SlotMask kernel={self.kernel!r}: use one of {KERNELS}, or None to choose by device")
        # The rule as two comparisons per (query, key), padding keys excluded on the key side:
        # - `lim`: a valid clean key at block b is seen by queries whose limit exceeds b (a clean
        #   query's limit is its block + 1, a noisy query's its block); other keys never qualify;
        # - `pair`: a noisy slot's (copy, block) as one id ≥ 0, seen by queries of the same pair;
        #   clean queries (-2) and clean or padding keys (-1) match nothing.
        # A padding query also sees itself (`rows` sets those few diagonal entries).
        clean, valid = self.copy == 0, self.valid
        self.k_lim = torch.where(clean & valid, self.block, torch.iinfo(torch.long).max)
        self.q_lim = self.block + clean.long()
        pair = self.copy * (int(self.block.max()) + 1) + self.block
        self.k_pair = torch.where(~clean & valid, pair, -1)
        self.q_pair = torch.where(clean, -2, pair)

    def to(self, device: torch.device | str) -> "SlotMask":
        return replace(self, copy=self.copy.to(device), block=self.block.to(device),
                       valid=self.valid.to(device), _flex_plan=None, _keys={})

    def rows(self, start: int = 0, end: int | None = None, keys: torch.Tensor | None = None) -> torch.Tensor:
        """Bool [R, end - start, K]: what queries start..end may attend among `keys` (default all T;
        given keys must include start..end, as `keys()` does)."""
        end = self.copy.shape[1] if end is None else end
        k = slice(None) if keys is None else keys
        mask = visible(self.q_lim[:, start:end, None], self.q_pair[:, start:end, None],
                       self.k_lim[:, None, k], self.k_pair[:, None, k])
        r, t = (~self.valid[:, start:end]).nonzero(as_tuple=True)
        t = t + start
        mask[r, t - start, t if keys is None else torch.searchsorted(keys, t)] = True
        return mask

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, enable_gqa: bool) -> torch.Tensor:
        if q.shape[2] != self.copy.shape[1] or k.shape[2] != self.copy.shape[1]:
            raise ValueError(f"SlotMask describes {self.copy.shape[1]} slots, got q {q.shape[2]} / k {k.shape[2]}")
        grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))
        if (self.kernel or ("flex" if q.is_cuda else "chunked")) == "flex" and (q.is_cuda or not grad):
            return self._flex_attend(q, k, v, enable_gqa)
        if grad and len(self.chunks) > 1:
            return _ChunkedAttention.apply(q, k, v, self, enable_gqa)
        return self._attend_chunks(q, k, v, enable_gqa)

    def _attend_chunks(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, enable_gqa: bool) -> torch.Tensor:
        out = []
        for start, end in self.chunks:
            _, mask, ks, vs = self._gather(k, v, start, end)
            out.append(F.scaled_dot_product_attention(q[:, :, start:end], ks, vs, attn_mask=mask,
                                                      enable_gqa=enable_gqa))
        return torch.cat(out, dim=2)

    @cached_property
    def chunks(self) -> list[tuple[int, int]]:
        """Query chunks of at most `query_chunk` slots, cut where the first row's slots change copy
        (at most every quarter chunk): a chunk inside one noisy copy needs only the clean keys
        below its blocks and its own slots; one spanning two copies needs both."""
        T, size = self.copy.shape[1], self.query_chunk
        cuts = [0]
        for t in (self.copy[0, 1:] != self.copy[0, :-1]).nonzero().squeeze(1).add(1).tolist():
            if t - cuts[-1] >= size // 4:
                cuts.append(t)
        out = []
        for a, b in zip(cuts, cuts[1:] + [T]):
            n = -(-(b - a) // size)  # equal pieces
            out += [(a + (b - a) * i // n, a + (b - a) * (i + 1) // n) for i in range(n)]
        return out

    def keys(self, start: int, end: int) -> torch.Tensor:
        """The keys some query start..end may attend (ascending), found per key in O(R·T) rather
        than from the [R, end - start, T] mask: a clean key below a query's limit, a noisy key
        whose pair a query has, the queries' own slots."""
        q_pair = self.q_pair[:, start:end]
        see = self.k_lim < self.q_lim[:, start:end].max(dim=1, keepdim=True).values
        row = torch.arange(q_pair.shape[0], device=q_pair.device)[:, None] * (max(int(self.q_pair.max()), 0) + 1)
        see |= (self.k_pair >= 0) & torch.isin(self.k_pair + row, (q_pair + row)[q_pair >= 0])
        need = see.any(dim=0)
        need[start:end] = True
        return need.nonzero().squeeze(1)

    def _gather(self, k: torch.Tensor, v: torch.Tensor, start: int,
                end: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(keys, mask, k, v) of queries start..end: block sparsity, the mask is built over the keys
        some query may see, found once per micro-batch (every layer, forward and backward, reuses them)."""
        keys = self._keys.get((start, end))
        if keys is None:
            keys = self._keys[start, end] = self.keys(start, end)
        if keys.numel() < self.copy.shape[1]:
            k, v = k.index_select(2, keys), v.index_select(2, keys)
        return keys, self.rows(start, end, keys)[:, None], k, v

    def _flex_attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, enable_gqa: bool) -> torch.Tensor:
        from . import slot_flex  # imports FlexAttention, which the chunked kernel never needs
        if self._flex_plan is None:  # once per micro-batch, shared by every layer
            self._flex_plan = slot_flex.plan(self.q_lim, self.q_pair, self.k_lim, self.k_pair)
        return slot_flex.attend(self._flex_plan, q, k, v, enable_gqa)


class _ChunkedAttention(torch.autograd.Function):
    """`SlotMask` attention over query chunks that keeps nothing per chunk: chunk masks would add
    up to R·T·T. Backward recomputes each chunk and adds its key/value gradients into one
    buffer (per-chunk autograd would zero-fill and add a full-length gradient per chunk). The
    recomputation runs under the forward's autocast state (backward runs outside autocast, and
    under bf16 autocast q/k/v may arrive in different dtypes that only autocast reconciles)."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spec: SlotMask,
                enable_gqa: bool) -> torch.Tensor:
        device = q.device.type
        ctx.spec, ctx.enable_gqa = spec, enable_gqa
        ctx.autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        ctx.save_for_backward(q, k, v)
        return spec._attend_chunks(q, k, v, enable_gqa)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        q, k, v = ctx.saved_tensors
        spec = ctx.spec
        device, autocast, dtype = ctx.autocast
        dq, dk, dv = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        for s, e in spec.chunks:
            keys, mask, kc, vc = spec._gather(k, v, s, e)
            with torch.enable_grad(), torch.autocast(device, dtype=dtype, enabled=autocast):
                qc, kc, vc = (x.detach().requires_grad_() for x in (q[:, :, s:e], kc, vc))
                out = F.scaled_dot_product_attention(qc, kc, vc, attn_mask=mask, enable_gqa=ctx.enable_gqa)
                gq, gk, gv = torch.autograd.grad(out, (qc, kc, vc), grad[:, :, s:e])
            dq[:, :, s:e] = gq
            dk.index_add_(2, keys, gk.to(dk.dtype))
            dv.index_add_(2, keys, gv.to(dv.dtype))
        return dq, dk, dv, None, None
