"""What the engine does next: which slots a block runs, its per-row inputs (one upload), when to
compact the slots and when a pass reads the block's status (docs/design.md §5).

Host synchronisation: a pass reads the status only when the pass count is data dependent (the
strategy's rule is not `planned`: dynamic, entropy_bounded); the planned strategies know every
pass's commits from the static schedule and read it once per block.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .host_link import HostLink
from .params import SamplingParams
from .slot_table import RowRecord
from .strategies import CommitRule, commit_rule, static_schedule


@dataclass(frozen=True)
class BlockPlan:
    """One block of slots [0, rows): per-row device inputs ([rows] unless noted) and host figures."""

    c0: torch.Tensor          # column of the row's block
    start: torch.Tensor       # column of its first response token
    canvas_end: torch.Tensor  # end of its canvas
    seed: torch.Tensor
    live: torch.Tensor        # bool: the slot holds a row
    schedule: torch.Tensor    # [rows, K] the static schedule's commits per pass
    host_schedule: list[list[int]]  # the same, on the host
    masked: torch.Tensor      # [rows, B] bool: slots masked at the block start
    left: list[int]           # host: masked slots per row at the block start
    reach: int                # host: the furthest live block's end column
    canvas: int               # host: the longest live canvas
    span: int                 # host: the longest live distance from a block to its canvas end

    @property
    def rows(self) -> int:
        return len(self.left)


class Scheduler:
    def __init__(self, params: SamplingParams, link: HostLink, fixed_shapes: bool, shift: int, width: int,
                 device: torch.device) -> None:
        self.p, self.link, self.fixed = params, link, fixed_shapes
        self.rule: CommitRule = commit_rule(params.strategy)
        self.ar = torch.arange(params.block_size, device=device)
        # An empty slot's inputs: its queries stay inside the slot (a full-attention span starts at
        # c0 - shift) and see every key (no all-masked row, whose attention would be NaN).
        self.empty = [shift, shift, width, 0, 0]

    def compacts(self, live: list[int], drained: bool) -> bool:
        """Move live rows down once the queue is empty and a quarter of the slots below the highest
        live one are free (fixed-shape passes run every slot anyway)."""
        return drained and not self.fixed and len(live) <= 0.75 * (live[-1] + 1)

    def plan(self, rows: list[RowRecord | None]) -> BlockPlan:
        """The next block of `rows` (every slot of a fixed-shape pass, else up to the last live one)."""
        B, K = self.p.block_size, self.p.steps_per_block
        live = [r for r in rows if r is not None]
        # Every block starts fully masked but a new row's first, which holds its prompt's tail.
        left = [0 if r is None else B - max(r.start - r.c0, 0) for r in rows]
        meta = [self.empty if r is None else [r.c0, r.start, r.canvas_end, r.item.seed, 1] for r in rows]
        schedule = static_schedule(left, K)
        upload = self.link.to_device([m + n for m, n in zip(meta, schedule)], torch.long)
        c0, start, canvas_end, seed, alive = upload[:, :5].unbind(1)
        return BlockPlan(c0, start, canvas_end, seed, alive.bool(), upload[:, 5:], schedule,
                         (c0[:, None] + self.ar >= start[:, None]) & alive.bool()[:, None], left,
                         reach=max(r.c0 for r in live) + B, canvas=max(r.canvas_end for r in live),
                         span=max(r.canvas_end - r.c0 for r in live))


class BlockProgress:
    """The host's view of a block in progress: masked slots per row and whether to read the status."""

    def __init__(self, plan: BlockPlan, rule: CommitRule) -> None:
        self.left = list(plan.left)
        self.schedule = plan.host_schedule if rule.planned else None

    @property
    def masked(self) -> int:
        return sum(self.left)

    def reads_after(self, k: int) -> bool:
        """After pass k: read the status now? (planned rules: at the block's last pass only)"""
        if self.schedule is None:
            return True
        self.left = [n - row[k] for n, row in zip(self.left, self.schedule)]
        return k == len(self.schedule[0]) - 1 or self.masked == 0

    def update(self, left: list[int]) -> bool:
        """The status's masked counts; True when the block is done."""
        self.left = left
        return self.masked == 0
