"""Which canvas columns a denoising pass runs, what they attend to, and where the block sits in them.

Block-causal, cached: a block's first pass runs [finished block | current block], each half with its
own key end (the finished block's K/V are written to the cache by this pass, exact since committed
blocks never change); the other passes run the current block. A row with no finished block (its
first block at column 0) repeats its current block. Block-causal, uncached (the reference): every
column up to the furthest block, block-causal mask. Full attention: a Fast-dLLM prefix cache, the
whole canvas rewritten by a block's first pass; the other passes run from the block to the canvas
end (uncached: the whole canvas every pass).

Fixed shapes (compiled passes): every pass reads the whole cache width and a full-attention pass
spans the longest possible block-to-end distance, so a decode has two pass shapes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from models.attention import MaskSpec
from models.config import ModelConfig
from models.decode_masks import BlockCausal, KeyEnd

from .params import SamplingParams
from .scheduler import BlockPlan


@dataclass(frozen=True)
class QueryPlan:
    cols: torch.Tensor      # [rows, Tq] canvas columns of the queries (also their positions)
    mask: MaskSpec
    read: int               # cache columns the queries attend over
    block_at: torch.Tensor  # [rows] query index of each row's block slot 0


class QueryPlanner:
    def __init__(self, cfg: ModelConfig, params: SamplingParams, width: int, fixed_shapes: bool,
                 device: torch.device, dtype: torch.dtype) -> None:
        self.p, self.width, self.fixed, self.dtype = params, width, fixed_shapes, dtype  # dtype: the model's
        self.block_causal, self.cached = cfg.attention == "block_causal", params.use_cache
        self.shift = int(cfg.shift_logits)
        self.groups = cfg.num_heads // cfg.num_kv_heads  # query heads per K/V head: the masks' repeats
        self.ar = torch.arange(params.block_size, device=device)

    def plan(self, block: BlockPlan, first_pass: bool) -> QueryPlan:
        if not self.block_causal:
            return self._full(block, first_pass)
        if not self.cached:
            cols = torch.arange(block.reach, device=self.ar.device).expand(block.rows, -1)
            return QueryPlan(cols, BlockCausal(self.p.block_size), block.reach, block.c0 - self.shift)
        return self._block_causal(block, first_pass)

    def _block_causal(self, block: BlockPlan, first_pass: bool) -> QueryPlan:
        B, c0 = self.p.block_size, block.c0
        read = self.width if self.fixed else block.reach
        if not first_pass:
            mask = KeyEnd((c0 + B,), B, read, self.dtype, self.groups)
            return QueryPlan(c0[:, None] + self.ar, mask, read, torch.zeros_like(c0))
        has_prev = c0 >= B
        prev = torch.where(has_prev, c0 - B, c0)
        cols = torch.cat([prev[:, None] + self.ar, c0[:, None] + self.ar], dim=1)
        mask = KeyEnd((torch.where(has_prev, c0, c0 + B), c0 + B), B, read, self.dtype, self.groups)
        return QueryPlan(cols, mask, read, torch.full_like(c0, B))

    def _full(self, block: BlockPlan, first_pass: bool) -> QueryPlan:
        width = self.width if self.fixed and self.cached else block.canvas
        mask = KeyEnd((block.canvas_end,), width, width, self.dtype, self.groups)
        if not self.cached or first_pass:
            cols = torch.arange(width, device=self.ar.device).expand(block.rows, -1)
            return QueryPlan(cols, mask, width, block.c0 - self.shift)
        # The longest span a row can need (a row's canvas ends at most max_new_tokens after its block).
        span = (self.p.max_new_tokens if self.fixed else block.span) + self.shift
        cols = (block.c0 - self.shift)[:, None] + torch.arange(span, device=self.ar.device)
        return QueryPlan(cols, mask, width, torch.zeros_like(block.c0))
