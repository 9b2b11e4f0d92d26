"""Continuous-batching block-diffusion decoder over a slot KV cache, resident on the model's device.

Slots: up to `max_batch_rows` sequences in flight. Canvas columns are absolute positions (no
padding between rows), so each row sits at its own block and every per-row quantity (current
block start, key ends, seeds, step counters) is a device tensor. All slots move block by block in
step; when rows finish (stop token or budget) their slots take the next prompts of the queue at
the block boundary: only those rows are prefilled, nobody else's K/V moves.

Cache (block-causal): committed blocks never change, so their K/V are exact. A finished block's
K/V are written by the *first pass of the next block* (query = [finished block | new block], each
half with its own key end), which saves the extra forward per block the reference engine spends.
A new row's prompt blocks but the last are prefilled once (rows admitted together in groups that
fit the prefill workspace, rollout/sizing.py); the last is that first pass's "finished block".
Cache (full attention): a Fast-dLLM prefix cache, refreshed at each block start.

Host synchronisation: a pass reads one small status tensor only when the pass count is data
dependent (dynamic, entropy_bounded); the planned strategies read it once per block. Finished rows
leave the device once per block in one batched asynchronous copy.

Fixed shapes (compiled passes: `rollout.compile`, `rollout.cuda_graphs`, rollout/decode_forward.py):
every decode pass runs all slots and reads the whole cache width, so a call has two decode shapes
(finished slots ride along with nothing masked; keys past a row's end are masked as always), and
the sampler rounds that width up so that calls share it (rollout/sizing.py, `stable_capacity`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from models.decode_masks import BlockCausal, KeyEnd
from models.transformer import DiffusionLM

from .decode_forward import DecodeForward
from .host_link import HostLink
from .params import SamplingParams
from .rng import uniforms
from .sizing import cache_width, prefill_groups
from .strategies import choose_commits, static_schedule
from .token_sampling import sample_candidates
from .trajectory import Trajectory

PLANNED = ("static", "random", "sequential")  # strategies whose commits per pass are known upfront
_REASONS = ("eos", "stop", "length")


@dataclass
class _Row:
    """Host bookkeeping of one slot's sequence (all of it known without reading the device)."""

    index: int
    prompt: list[int]
    c0: int  # column of the current block
    canvas_end: int  # end of this row's canvas


def canvas_of(prompt_len: int, params: SamplingParams, block_causal: bool) -> tuple[int, int]:
    """(first generated block's column, canvas end) of a prompt. Block-causal blocks are aligned to
    positions (as SDAR was trained), so the prompt's tail shares the first generated block."""
    B = params.block_size
    if block_causal:
        c0 = prompt_len // B * B
        return c0, c0 + -(-(prompt_len - c0 + params.max_new_tokens) // B) * B
    return prompt_len, prompt_len + params.max_new_tokens


class SlotDecoder:
    def __init__(self, model: DiffusionLM, params: SamplingParams, capacity: int, slots: int,
                 forward: DecodeForward | None = None, prefill_tokens: int | None = None) -> None:
        cfg = model.config
        self.model, self.p, self.cfg = model, params, cfg
        self.forward = forward or DecodeForward()
        self.fixed, self.slots = self.forward.fixed_shapes, slots
        self.dev = model.embed_tokens.weight.device
        self.link = HostLink(self.dev)
        self.block_causal = cfg.attention == "block_causal"
        self.shift = int(cfg.shift_logits)
        B = params.block_size
        self.width = width = cache_width(cfg, params, capacity)
        self.prefill_tokens = prefill_tokens  # rows x columns of one prefill forward (None: unbounded)
        self.cache = model.new_kv_cache(slots, width) if params.use_cache else None
        self.forward.prepare(self.cache)
        z = dict(device=self.dev)
        self.tokens = torch.full((slots, width), cfg.mask_token_id, dtype=torch.long, **z)
        self.steps = torch.zeros((slots, width), dtype=torch.long, **z)
        self.logp = torch.zeros((slots, width), **z)
        self.ent = torch.zeros((slots, width), **z)
        self.c0 = torch.zeros(slots, dtype=torch.long, **z)
        self.start = torch.zeros(slots, dtype=torch.long, **z)
        self.canvas_end = torch.zeros(slots, dtype=torch.long, **z)
        self.seed = torch.zeros(slots, dtype=torch.long, **z)
        self.row_steps = torch.zeros(slots, dtype=torch.long, **z)
        self.alive = torch.zeros(slots, dtype=torch.bool, **z)
        self.ar = torch.arange(B, **z)
        stops = [] if params.ignore_eos else sorted({cfg.eos_token_id, *cfg.stop_token_ids, *params.stop_token_ids})
        self.stop_ids = self.link.to_device(stops, torch.long)
        self.rows: list[_Row | None] = [None] * slots
        self.drained = False  # the queue is empty: free slots stay free
        self.passes = self.prefill_forwards = 0
        self._pending: list[tuple[list[_Row], list[int], list[int], torch.Tensor, torch.Tensor, torch.Tensor]] = []

    # ---- admission ---------------------------------------------------------------------------

    def _admit(self, queue: Iterator[tuple[int, list[int], int]]) -> None:
        free = [s for s, r in enumerate(self.rows) if r is None]
        new: list[tuple[int, int, list[int], int]] = []
        for s in free:
            item = next(queue, None)
            if item is None:
                self.drained = True
                break
            new.append((s, *item))
        if not new:
            return
        B, mask_id = self.p.block_size, self.cfg.mask_token_id
        canvas = torch.full((len(new), self.width), mask_id, dtype=torch.long)
        meta = []
        for j, (s, index, prompt, seed) in enumerate(new):
            canvas[j, : len(prompt)] = torch.tensor(prompt)
            c0, end = canvas_of(len(prompt), self.p, self.block_causal)
            self.rows[s] = _Row(index, prompt, c0, end)
            meta.append([c0, len(prompt), end, seed])
        slots = self.link.to_device([s for s, *_ in new], torch.long)
        meta_d = self.link.to_device(meta, torch.long)
        self.tokens[slots] = self.link.to_device(canvas, torch.long)
        for t in (self.steps, self.logp, self.ent):
            t[slots] = 0
        self.c0[slots], self.start[slots], self.canvas_end[slots], self.seed[slots] = meta_d.unbind(1)
        self.row_steps[slots] = 0
        self.alive[slots] = True
        # Block-causal: prompt blocks before the last whole one never change: prefill them once, in
        # groups of rows that fit the prefill workspace (padded to the group's widest prompt).
        if self.cache is None or not self.block_causal:
            return
        for start, stop, cols in prefill_groups([self.rows[s].c0 - B for s, *_ in new], self.prefill_tokens):
            pos, group = torch.arange(cols, device=self.dev), slots[start:stop]
            self.cache.prefill(group, pos)
            self.model.hidden_states(self.tokens[group, :cols], pos.expand(stop - start, -1), BlockCausal(B),
                                     self.cache)
            self.prefill_forwards += 1

    def _compact(self, live: list[int]) -> None:
        """Move the live rows to slots [0, n): once the queue is empty nothing refills the finished
        slots below the highest live one, and every pass would compute them. One copy of the live
        rows' canvases and cache rows (at most log_{4/3}(slots) times a decode)."""
        n = len(live)
        src = self.link.to_device(live, torch.long)
        for t in (self.tokens, self.steps, self.logp, self.ent, self.c0, self.start, self.canvas_end, self.seed,
                  self.row_steps, self.alive):
            t[:n] = t[src]
        self.alive[n:] = False
        if self.cache is not None:
            self.cache.move(src)
        self.rows = [self.rows[s] for s in live] + [None] * (self.slots - n)

    # ---- one denoising pass ------------------------------------------------------------------

    def _query(self, hi: int, fused: bool) -> tuple[torch.Tensor, object, int, int]:
        """(query columns [hi, Tq], mask, keys read from the cache, query index of block slot 0)."""
        B, rows = self.p.block_size, self.rows[:hi]
        c0, end = self.c0[:hi], self.canvas_end[:hi]
        live_c0 = [r.c0 for r in rows if r]
        if self.block_causal:
            if self.cache is None:  # uncached reference: everything up to the furthest block
                width = max(live_c0) + B
                return torch.arange(width, device=self.dev).expand(hi, -1), BlockCausal(B), 0, -1
            read = self.width if self.fixed else max(live_c0) + B
            if not fused:
                return c0[:, None] + self.ar, KeyEnd((c0 + B,), B), read, 0
            # [finished block | current block]; a row with no finished block repeats its current one.
            has_prev = c0 >= B
            prev = torch.where(has_prev, c0 - B, c0)
            cols = torch.cat([prev[:, None] + self.ar, c0[:, None] + self.ar], dim=1)
            return cols, KeyEnd((torch.where(has_prev, c0, c0 + B), c0 + B), B), read, B
        width = self.width if self.fixed and self.cache is not None else max(r.canvas_end for r in rows if r)
        mask = KeyEnd((end,), width)
        if self.cache is None or fused:
            return torch.arange(width, device=self.dev).expand(hi, -1), mask, width, -1
        # The longest span a row can need (a row's canvas ends at most max_new_tokens after its block).
        span = (self.p.max_new_tokens if self.fixed else max(r.canvas_end - r.c0 for r in rows if r)) + self.shift
        return (c0 - self.shift)[:, None] + torch.arange(span, device=self.dev), mask, width, 0

    def _pass(self, hi: int, k: int, masked: torch.Tensor, schedule: torch.Tensor, m: int) -> torch.Tensor:
        """Run pass k of the current block over slots [0, hi) with m masked slots; returns masked."""
        p, B, K = self.p, self.p.block_size, self.p.steps_per_block
        c0 = self.c0[:hi]
        cols, mask, read, slot0 = self._query(hi, k == 0)
        tq = cols.shape[1]
        flat = torch.nonzero_static(masked.flatten(), size=m).squeeze(1)  # no host sync
        r, s = flat // B, flat % B
        # slot0 < 0: the query spans the canvas from column 0, so block slot s sits at c0 + s.
        at = r * tq + (c0[r] + s - self.shift if slot0 < 0 else slot0 + s)
        if self.cache is not None:
            self.cache.decode(cols, read)
        logits = self.forward.logits(
            self.model, self.tokens[:hi].gather(1, cols.clamp(max=self.width - 1)), cols, mask, self.cache, at
        )
        step_now = self.row_steps[:hi] + 1
        cand = sample_candidates(
            logits,
            uniforms(self.seed[r], c0[r] + s, step_now[r], 0),
            p.temperature,
            p.top_k,
            p.top_p,
            self.cfg.mask_token_id,
        )

        def spread(values: torch.Tensor) -> torch.Tensor:
            return torch.zeros(hi * B, dtype=values.dtype, device=self.dev).index_copy_(0, flat, values).view(hi, B)

        conf, ent = spread(cand.confidence), spread(cand.entropy)
        rand = (
            uniforms(self.seed[:hi, None], c0[:, None] + self.ar, step_now[:, None], 1)
            if p.strategy == "random"
            else None
        )
        commit = choose_commits(p, masked, conf, ent, rand, schedule[:, k], k == K - 1)
        block = c0[:, None] + self.ar
        for canvas, new in (
            (self.tokens, spread(cand.tokens)),
            (self.steps, step_now[:, None].expand(-1, B)),
            (self.logp, spread(cand.logprobs)),
            (self.ent, ent),
        ):
            view = canvas[:hi]
            view.scatter_(1, block, torch.where(commit, new, view.gather(1, block)))
        self.row_steps[:hi] += masked.any(1)
        self.passes += 1
        return masked & ~commit

    # ---- block end ---------------------------------------------------------------------------

    def _status(self, hi: int, masked: torch.Tensor) -> torch.Tensor:
        """[hi, 4] per row: masked left, finished?, response end column, reason index."""
        c1 = self.c0[:hi] + self.p.block_size
        start, budget = self.start[:hi], self.start[:hi] + self.p.max_new_tokens
        col = torch.arange(self.width, device=self.dev)
        hit = (
            torch.isin(self.tokens[:hi], self.stop_ids)
            & (col >= start[:, None])
            & (col < c1[:, None])
            & (col < budget[:, None])
        )
        first = torch.where(hit, col, self.width).min(1).values
        has = first < self.width
        end = torch.where(has, first + 1, budget)
        eos = self.tokens[:hi].gather(1, first.clamp(max=self.width - 1)[:, None]).squeeze(1) == self.cfg.eos_token_id
        reason = torch.where(has, torch.where(eos, 0, 1), 2)
        done = self.alive[:hi] & (has | (c1 - start >= self.p.max_new_tokens))
        return torch.stack([masked.sum(1), done.long(), end, reason], dim=1)

    def _close_block(self, hi: int, status: list[list[int]], done_dev: torch.Tensor) -> None:
        finished = [s for s in range(hi) if self.rows[s] is not None and status[s][1]]
        if finished:
            slots = self.link.to_device(finished, torch.long)
            data = (
                self.link.copy_out(torch.stack([self.tokens[slots], self.steps[slots]])),
                self.link.copy_out(torch.stack([self.logp[slots], self.ent[slots]])),
                self.link.copy_out(self.row_steps[slots]),
            )
            rows = [self.rows[s] for s in finished]
            self._pending.append((rows, [status[s][2] for s in finished], [status[s][3] for s in finished], *data))
        self.alive[:hi] &= ~done_dev
        self.c0[:hi] += self.p.block_size * self.alive[:hi]
        for s in range(hi):
            row = self.rows[s]
            if row is not None and s in finished:
                self.rows[s] = None
            elif row is not None:
                row.c0 += self.p.block_size

    def _emit(self) -> Iterator[tuple[int, Trajectory]]:
        """Trajectories of rows whose async copy an earlier sync completed."""
        B = self.p.block_size
        for rows, ends, reasons, longs, floats, forwards in self._pending:
            longs, floats = self.link.host_list(longs), self.link.host_list(floats)
            forwards = self.link.host_list(forwards)
            for j, (row, end, reason) in enumerate(zip(rows, ends, reasons)):
                start, c1 = len(row.prompt), row.c0 + B
                yield (
                    row.index,
                    Trajectory(
                        prompt_ids=list(row.prompt),
                        response_ids=longs[0][j][start:end],
                        step_map=longs[1][j][start:end],
                        logprobs=floats[0][j][start:end],
                        entropies=floats[1][j][start:end],
                        block_size=B,
                        finish_reason=_REASONS[reason],
                        num_forwards=forwards[j],
                        tail_ids=longs[0][j][end:c1],
                        tail_steps=longs[1][j][end:c1],
                        canvas_len=0 if self.block_causal else self.p.max_new_tokens,
                    ),
                )
        self._pending.clear()

    # ---- the loop ----------------------------------------------------------------------------

    def run(self, queue: Iterator[tuple[int, list[int], int]]) -> Iterator[tuple[int, Trajectory]]:
        """Decode every (index, prompt, seed) of `queue`; yields (index, trajectory) as rows finish."""
        B, K = self.p.block_size, self.p.steps_per_block
        planned = self.p.strategy in PLANNED
        while True:
            self._admit(queue)
            live = [s for s, r in enumerate(self.rows) if r is not None]
            if not live:
                break
            if self.drained and not self.fixed and len(live) <= 0.75 * (live[-1] + 1):
                self._compact(live)
                live = list(range(len(live)))
            hi = self.slots if self.fixed else live[-1] + 1
            c0 = self.c0[:hi]
            masked = (self.tokens[:hi].gather(1, c0[:, None] + self.ar) == self.cfg.mask_token_id) & self.alive[
                :hi, None
            ]
            # Every block starts fully masked but a new row's first, which holds its prompt's tail.
            left = [0 if r is None else B - max(len(r.prompt) - r.c0, 0) for r in self.rows[:hi]]
            plan = static_schedule(left, K)
            schedule = self.link.to_device(plan, torch.long)
            for k in range(K):
                masked = self._pass(hi, k, masked, schedule, sum(left))
                if planned:
                    left = [n - row[k] for n, row in zip(left, plan)]
                if not planned or k == K - 1 or sum(left) == 0:
                    status_dev = self._status(hi, masked)
                    status = self.link.read(status_dev)
                    yield from self._emit()
                    left = [row[0] for row in status]
                    if sum(left) == 0:
                        self._close_block(hi, status, status_dev[:, 1].bool())
                        break
        self.link.drain()
        yield from self._emit()
