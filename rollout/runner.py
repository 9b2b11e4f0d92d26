"""One denoising pass over a block (forward, sample, commit) and the prefill of admitted rows.

Everything stays on the model's device with no host synchronisation: the masked slots are found
with a statically sized nonzero (their count is the host's), candidates are drawn from hashed
uniforms (rollout/rng.py) and the strategy's rule picks the commits (rollout/strategies.py).
"""
from __future__ import annotations

import torch

from models.decode_masks import BlockCausal
from models.transformer import DiffusionLM

from .decode_forward import DecodeForward
from .params import SamplingParams
from .query_plan import QueryPlanner
from .rng import uniforms
from .scheduler import BlockPlan
from .sizing import prefill_groups
from .slot_table import Admitted, SlotTable
from .strategies import CommitRule, PassScores, choose_commits
from .token_sampling import sample_candidates


class PassRunner:
    def __init__(self, model: DiffusionLM, params: SamplingParams, table: SlotTable, rule: CommitRule,
                 forward: DecodeForward, queries: QueryPlanner, prefill_tokens: int | None) -> None:
        self.model, self.p, self.table, self.rule, self.forward = model, params, table, rule, forward
        self.queries = queries
        self.prefill_tokens = prefill_tokens  # rows x columns of one prefill forward (None: unbounded)
        self.ar = queries.ar
        self.passes = self.prefill_forwards = 0

    def prefill(self, new: Admitted) -> None:
        """Block-causal with a cache: a new row's prompt blocks before the last whole one never
        change, so their K/V are written once, in groups of rows that fit the prefill workspace
        (padded to the group's widest prompt); the last one is rewritten by the first pass."""
        cache, B = self.table.cache, self.p.block_size
        if cache is None or not self.queries.block_causal:
            return
        for start, stop, cols in prefill_groups([r.c0 - B for r in new.rows], self.prefill_tokens):
            pos, group = torch.arange(cols, device=new.slots.device), new.slots[start:stop]
            cache.prefill(group, pos)
            self.model.hidden_states(self.table.tokens[group, :cols], pos.expand(stop - start, -1), BlockCausal(B),
                                     cache, self.table.image_rows(group))
            self.prefill_forwards += 1

    def run(self, block: BlockPlan, k: int, masked: torch.Tensor, count: int) -> torch.Tensor:
        """Pass k of `block` with `count` masked slots (`masked` [rows, B]); returns what stays masked."""
        B, table, rows = self.p.block_size, self.table, block.rows
        q = self.queries.plan(block, k == 0)
        flat = torch.nonzero_static(masked.flatten(), size=count).squeeze(1)  # no host sync
        r, s = flat // B, flat % B
        if table.cache is not None:
            table.cache.decode(q.cols, q.read)
        ids = table.tokens[:rows].gather(1, q.cols.clamp(max=table.width - 1))
        logits = self.forward.logits(self.model, ids, q.cols, q.mask, table.cache,
                                     r * q.cols.shape[1] + q.block_at[r] + s, table.image_rows(rows))
        step_now = table.row_steps[:rows] + 1
        cand = sample_candidates(logits, uniforms(block.seed[r], block.c0[r] + s, step_now[r], 0), self.p.temperature,
                                 self.p.top_k, self.p.top_p, table.mask_id)

        def spread(values: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(rows * B, dtype=values.dtype, device=flat.device)
            return out.index_copy_(0, flat, values).view(rows, B)

        block_cols = block.c0[:, None] + self.ar
        rand = uniforms(block.seed[:, None], block_cols, step_now[:, None], 1) if self.rule.draws_random else None
        scores = PassScores(masked, spread(cand.confidence), spread(cand.entropy), rand, block.schedule[:, k])
        commit = choose_commits(self.rule, self.p, scores, k == self.p.steps_per_block - 1)
        for canvas, new in ((table.tokens, spread(cand.tokens)), (table.steps, step_now[:, None].expand(-1, B)),
                            (table.logp, spread(cand.logprobs)), (table.ent, scores.entropy)):
            view = canvas[:rows]
            view.scatter_(1, block_cols, torch.where(commit, new, view.gather(1, block_cols)))
        table.row_steps[:rows] += masked.any(1)
        self.passes += 1
        return masked & ~commit
