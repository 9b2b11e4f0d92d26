"""Continuous-batching block-diffusion decoding over a slot KV cache, resident on the model's device.

Slots: up to `slots` sequences in flight (rollout/slot_table.py). Canvas columns are absolute
positions (no padding between rows), so each row sits at its own block. All slots move block by
block together; when rows finish (stop token or budget) their slots take the next prompts of the
queue at the block boundary: only those rows are prefilled, nobody else's K/V moves. The loop is
the scheduler's block plan (rollout/scheduler.py), up to K passes (rollout/runner.py) and the
status read the strategy needs (rollout/stopping.py); finished rows leave the device in one
asynchronous copy per block and are yielded after the next read.
"""
from __future__ import annotations

from collections.abc import Iterator

from models.transformer import DiffusionLM

from .decode_forward import DecodeForward
from .host_link import HostLink
from .params import SamplingParams
from .query_plan import QueryPlanner
from .runner import PassRunner
from .scheduler import BlockPlan, BlockProgress, Scheduler
from .sizing import cache_width
from .slot_table import PromptItem, RowEnd, SlotTable
from .stopping import StopRule
from .trajectory import Trajectory


class SlotDecoder:
    def __init__(self, model: DiffusionLM, params: SamplingParams, capacity: int, slots: int,
                 forward: DecodeForward | None = None, prefill_tokens: int | None = None) -> None:
        cfg, dev = model.config, model.embed_tokens.weight.device
        forward = forward or DecodeForward()
        self.p, self.link = params, HostLink(dev)
        self.width = cache_width(cfg, params, capacity)
        self.table = SlotTable(model, params, slots, self.width, self.link)
        forward.prepare(self.table.cache)
        self.scheduler = Scheduler(params, self.link, forward.fixed_shapes, int(cfg.shift_logits), self.width, dev)
        queries = QueryPlanner(cfg, params, self.width, forward.fixed_shapes, dev, model.embed_tokens.weight.dtype)
        self.runner = PassRunner(model, params, self.table, self.scheduler.rule, forward, queries, prefill_tokens)
        self.stopping = StopRule(cfg, params, self.link)
        self.drained = False  # the queue is empty: free slots stay free

    def run(self, queue: Iterator[PromptItem]) -> Iterator[tuple[int, Trajectory]]:
        """Decode every item of `queue`; yields (index, trajectory) as rows finish."""
        while self._fill(queue):
            yield from self._block(self.scheduler.plan(self._rows()))
        self.link.drain()
        yield from self.table.emit()

    def _fill(self, queue: Iterator[PromptItem]) -> bool:
        """Admit prompts into the free slots (prefilling them); False when no row is left."""
        items = []
        for _ in self.table.free():
            item = next(queue, None)
            if item is None:
                self.drained = True
                break
            items.append(item)
        if items:
            self.runner.prefill(self.table.admit(items))
        return bool(self.table.live())

    def _rows(self) -> list:
        """The slots the next block runs (compacting the live rows first when it pays)."""
        live = self.table.live()
        if self.scheduler.compacts(live, self.drained):
            self.table.compact(live)
            live = list(range(len(live)))
        return self.table.rows if self.scheduler.fixed else self.table.rows[: live[-1] + 1]

    def _block(self, plan: BlockPlan) -> Iterator[tuple[int, Trajectory]]:
        progress, masked = BlockProgress(plan, self.scheduler.rule), plan.masked
        for k in range(self.p.steps_per_block):
            masked = self.runner.run(plan, k, masked, progress.masked)
            if not progress.reads_after(k):
                continue
            status = self.stopping.status(self.table.block_tokens(plan.c0), plan, masked)
            yield from self.table.emit()
            if progress.update([s.left for s in status]):
                self.table.close({i: RowEnd(s.end, s.reason) for i, s in enumerate(status) if s.done})
                return
