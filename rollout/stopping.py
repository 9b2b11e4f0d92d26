"""When rows end: the per-row status a pass's host read returns (docs/design.md §5, "Stopping").

A row ends at EOS, a configured stop id, or `max_new_tokens`. Only the current block can hold a
new stop token (a stop in an earlier block ended the row at that block's end), so the status looks
at the block's B columns, not the canvas. The status is one small [rows, 4] tensor whose columns
are named here and nowhere else.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from models.config import ModelConfig

from .host_link import HostLink
from .params import SamplingParams
from .scheduler import BlockPlan
from .trajectory import FinishReason

_COLUMNS = ("left", "done", "end", "reason")
_REASONS: tuple[FinishReason, ...] = ("eos", "stop", "length")


@dataclass(frozen=True)
class RowStatus:
    left: int             # masked slots left in the block
    done: bool            # ended (a stop token in the response, or the budget reached)
    end: int              # response end column (exclusive), when done
    reason: FinishReason  # why, when done


class StopRule:
    def __init__(self, cfg: ModelConfig, params: SamplingParams, link: HostLink) -> None:
        self.p, self.link, self.eos = params, link, cfg.eos_token_id
        stops = [] if params.ignore_eos else sorted({cfg.eos_token_id, *cfg.stop_token_ids, *params.stop_token_ids})
        self.stop_ids = link.to_device(stops, torch.long)

    def status(self, block_ids: torch.Tensor, plan: BlockPlan, masked: torch.Tensor) -> list[RowStatus]:
        """Read (one host sync) the status of every row, given its block's tokens [rows, B]."""
        cols = plan.c0[:, None] + torch.arange(block_ids.shape[1], device=block_ids.device)
        budget = plan.start + self.p.max_new_tokens
        hit = torch.isin(block_ids, self.stop_ids) & (cols >= plan.start[:, None]) & (cols < budget[:, None])
        first = torch.where(hit, cols, cols[:, -1:] + 1).min(1, keepdim=True).values
        has = hit.any(1)
        eos = block_ids.gather(1, (first - plan.c0[:, None]).clamp(max=block_ids.shape[1] - 1)) == self.eos
        columns = {
            "left": masked.sum(1),
            "done": plan.live & (has | (plan.c0 + block_ids.shape[1] - plan.start >= self.p.max_new_tokens)),
            "end": torch.where(has, first.squeeze(1) + 1, budget),
            "reason": torch.where(has, torch.where(eos.squeeze(1), 0, 1), 2),
        }
        rows = self.link.read(torch.stack([columns[name] for name in _COLUMNS], dim=1))
        return [self._row(dict(zip(_COLUMNS, values))) for values in rows]

    @staticmethod
    def _row(values: dict[str, int]) -> RowStatus:
        return RowStatus(values["left"], bool(values["done"]), values["end"], _REASONS[values["reason"]])
