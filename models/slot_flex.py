"""`SlotMask` attention through FlexAttention (models/slot_mask.py): the slot rule as a block-sparse
mask, run by one compiled kernel per (grad mode, dtype) whatever the micro-batch's rows R and slots T.

The learner calls attention with a new (R, T) per micro-batch, with and without grad, under bf16
autocast or not. torch.compile would otherwise make each size change, R == 1 and each autocast state
its own variant under the shared recompile limit (8), and past it run flex eagerly, which builds the
[R, heads, T, T] scores. So every call is put in one shape class:

- R and T are dynamic from the first call (marked, not learned after a recompile);
- T is padded to a multiple of the 128-slot block and to at least two blocks, R to at least two
  rows (sizes 0 and 1 would be specialised). Padding slots and rows see only themselves, so a pad
  row costs its diagonal blocks only;
- inside the compiled function T is tied to the block count (T = 128 · blocks), which lets the
  compiler prove T divisible and use the kernel without bounds checks;
- q, k, v are always copied into one contiguous layout (strides are guarded too);
- autocast's cast is applied before the call and the call runs with autocast off (the autocast
  state is guarded; the numerics are those autocast gives attention: all three in its dtype).

Hitting the recompile limit anyway raises instead of falling back to eager flex.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from .slot_mask import visible

BLOCK = 128  # FlexAttention's sparse block: the mask is decided per 128 x 128 tile


def mask_mod(codes: torch.Tensor) -> Callable:
    """The slot rule as FlexAttention's mask_mod(row, head, query, key) over codes [R, 4, T] (q_lim,
    q_pair, k_lim, k_pair), every slot seeing itself."""

    def rule(b, h, qi, ki):
        return visible(codes[b, 0, qi], codes[b, 1, qi], codes[b, 2, ki], codes[b, 3, ki]) | (qi == ki)

    return rule


@dataclass
class FlexPlan:
    """One micro-batch's padded rule codes and block mask (built once, shared by every layer)."""
    rows: int                        # R before padding
    slots: int                       # T before padding
    codes: torch.Tensor              # q_lim, q_pair, k_lim, k_pair stacked [R', 4, T'], padded
    blocks: tuple[torch.Tensor, ...]  # BlockMask kv/q (full) counts [R', 1, n] and indices [R', 1, n, n]


def padded_size(rows: int, slots: int) -> tuple[int, int]:
    """(R', T'): R' ≥ 2, T' a multiple of BLOCK with at least two blocks."""
    return max(rows, 2), max(-(-slots // BLOCK), 2) * BLOCK


def plan(q_lim: torch.Tensor, q_pair: torch.Tensor, k_lim: torch.Tensor, k_pair: torch.Tensor) -> FlexPlan:
    """Codes padded so that added slots and rows match nothing (a query limit of -1, a clean query's
    pair -2, a hidden key's limit max and pair -1) but their own diagonal, and the block mask."""
    with torch.no_grad():
        R, T = q_lim.shape
        Rp, Tp = padded_size(R, T)
        big = torch.iinfo(torch.long).max

        def pad(x: torch.Tensor, fill: int) -> torch.Tensor:
            out = x.new_full((Rp, Tp), fill)
            out[:R, :T] = x
            return out

        codes = (pad(q_lim, -1), pad(q_pair, -2), pad(k_lim, big), pad(k_pair, -1))
        partial, full = block_masks(*codes)
        codes = torch.stack(codes, dim=1)
        mask = BlockMask.from_kv_blocks(*ordered(partial), *ordered(full), BLOCK_SIZE=BLOCK, seq_lengths=(Tp, Tp))
        blocks = (mask.kv_num_blocks, mask.kv_indices, mask.full_kv_num_blocks, mask.full_kv_indices,
                  mask.q_num_blocks, mask.q_indices, mask.full_q_num_blocks, mask.full_q_indices)
    torch._dynamo.mark_dynamic(codes, [0, 2])
    for x in blocks:
        torch._dynamo.mark_dynamic(x, [0, *range(2, x.dim())])
    return FlexPlan(R, T, codes, blocks)


def block_masks(q_lim: torch.Tensor, q_pair: torch.Tensor, k_lim: torch.Tensor,
                k_pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(partial, full) bool [R, n, n] over BLOCK x BLOCK tiles, from per-tile summaries of the codes
    instead of the [R, T, T] mask. A tile is non-empty exactly when some query has a limit above some
    key's, or shares a noisy pair with some key, or it holds the diagonal. It is full when every key's
    limit is below every query's, or all its queries and keys carry one pair; other full tiles are
    left partial (correct, only slower)."""
    R, T = q_lim.shape
    n = T // BLOCK
    ql, qp, kl, kp = (x.view(R, n, BLOCK) for x in (q_lim, q_pair, k_lim, k_pair))
    some = (kl.amin(-1)[:, None, :] < ql.amax(-1)[:, :, None]) | _shared_pairs(q_pair, k_pair, n)
    some |= torch.eye(n, dtype=torch.bool, device=q_lim.device)
    full = kl.amax(-1)[:, None, :] < ql.amin(-1)[:, :, None]
    q_one, k_one = qp.amin(-1), kp.amin(-1)
    q_one = torch.where((q_one == qp.amax(-1)) & (q_one >= 0), q_one, -2)
    k_one = torch.where(k_one == kp.amax(-1), k_one, -3)
    full |= q_one[:, :, None] == k_one[:, None, :]
    return some & ~full, full


def _shared_pairs(q_pair: torch.Tensor, k_pair: torch.Tensor, n: int) -> torch.Tensor:
    """Bool [R, n, n]: some query of tile i and some key of tile j share a noisy pair (≥ 0), as a
    product of tile x pair incidence matrices over each row's own pairs."""
    R, T = q_pair.shape
    codes = torch.cat([q_pair, k_pair], dim=1)  # queries then keys, [R, 2T]
    row, slot = (codes >= 0).nonzero(as_tuple=True)
    if row.numel() == 0:
        return torch.zeros(R, n, n, dtype=torch.bool, device=q_pair.device)
    span = int(codes.max()) + 1
    ids, local = torch.unique(row * span + codes[row, slot], return_inverse=True)
    local = local - torch.searchsorted(ids, torch.arange(R, device=ids.device) * span)[row]  # per-row pair index
    tile = slot % T // BLOCK + n * (slot >= T)  # query tiles 0..n-1, key tiles n..2n-1
    incidence = torch.zeros(R, 2 * n, int(local.max()) + 1, device=q_pair.device)
    incidence[row, tile, local] = 1.0
    return incidence[:, :n] @ incidence[:, n:].transpose(1, 2) > 0


def ordered(dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A [R, n, n] tile mask as BlockMask's (count [R, 1, n], indices [R, 1, n, n]): per query tile
    the number of its tiles and their key tiles first."""
    dense = dense[:, None].to(torch.int32)
    return dense.sum(-1, dtype=torch.int32), dense.argsort(dim=-1, descending=True, stable=True).to(torch.int32)


def _padded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, codes: torch.Tensor,
                      blocks: tuple[torch.Tensor, ...], enable_gqa: bool) -> torch.Tensor:
    """What is compiled. Every size is tied to R and the block count n (T = 128 · n): the compiler
    can prove T divisible, and the kernel sees two size symbols, not one per tensor dimension (torch
    2.13's CPU flex template renames its split-size symbol by text, so with ten or more size
    arguments `ks2` also rewrites `ks24` and the C++ does not compile)."""
    R, T, n = q.shape[0], q.shape[2], blocks[1].shape[-1]
    torch._check(T == n * BLOCK)
    for x in (k, v, codes, *blocks):
        torch._check(x.shape[0] == R)
    for x in (k, v):
        torch._check(x.shape[2] == T)
    torch._check(codes.shape[2] == T)
    for x in blocks:
        for d in range(2, x.dim()):
            torch._check(x.shape[d] == n)
    # Rebuilt here so that its lengths are the symbolic T.
    mask = BlockMask((T, T), *blocks, (BLOCK, BLOCK), mask_mod(codes))
    return flex_attention(q, k, v, block_mask=mask, enable_gqa=enable_gqa)


_compiled = torch.compile(_padded_attention)


def attend(p: FlexPlan, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, enable_gqa: bool) -> torch.Tensor:
    """Attention [R, H, T, D] of q [R, H, T, D], k/v [R, Hkv, T, D] under the plan's rule."""
    device = q.device.type
    if torch.is_autocast_enabled(device):
        q, k, v = (x.to(torch.get_autocast_dtype(device)) for x in (q, k, v))
    Rp, Tp = p.codes.shape[0], p.codes.shape[2]
    padded = []
    for x in (q, k, v):
        buf = x.new_zeros(Rp, x.shape[1], Tp, x.shape[3])
        buf[:p.rows, :, :p.slots] = x
        torch._dynamo.mark_dynamic(buf, [0, 2])
        padded.append(buf)
    with torch.autocast(device, enabled=False), torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        out = _compiled(*padded, p.codes, p.blocks, enable_gqa)
    return out[:p.rows, :, :p.slots]
