"""Rows → padded micro-batches under a token budget; the attention mask stays a per-slot description."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from models.slot_mask import SlotMask
from models.vision import RowImages

from .images import TrajectoryImages
from .rows import Row, one_thread


@dataclass
class MicroBatch:
    input_ids: torch.Tensor     # [R, T]
    position_ids: torch.Tensor  # [R, T]
    attn_mask: SlotMask         # per-slot copy/block/validity [R, T] (models/slot_mask.py)
    logits_at: torch.Tensor     # [R, T] bool; the M trained tokens in row-major order
    value_at: torch.Tensor      # [R, T] bool; each trained token's own slot (value model reads here)
    targets: torch.Tensor       # [M]
    traj_index: torch.Tensor    # [M] which trajectory each trained token belongs to
    token_index: torch.Tensor   # [M] its index in that trajectory's response
    row_weight: torch.Tensor    # [M] objective-specific factor from row building (e.g. 1/t)
    # Per-token tensors [M] the objective attaches (advantages, old log-probs, loss weights, ...).
    data: dict[str, torch.Tensor] = field(default_factory=dict)
    images: RowImages | None = None  # the rows' prompt images (vision-language models)

    @property
    def num_tokens(self) -> int:
        return int(self.targets.numel())

    def to(self, device: torch.device | str) -> "MicroBatch":
        moved = {k: None if v is None else v.to(device) for k, v in self.__dict__.items() if k != "data"}
        return MicroBatch(**moved, data={k: v.to(device) for k, v in self.data.items()})

    def model_inputs(self) -> dict[str, RowImages]:
        """Keyword arguments of the model's forward beyond the tokens: the images, when there are any."""
        return {} if self.images is None else {"images": self.images}


def collate(rows: list[Row], pad_id: int, images: TrajectoryImages | None = None) -> MicroBatch:
    T = max(len(r) for r in rows)
    R = len(rows)
    ids = torch.full((R, T), pad_id, dtype=torch.long)
    pos = torch.zeros((R, T), dtype=torch.long)
    copy = torch.zeros((R, T), dtype=torch.long)
    block = torch.zeros((R, T), dtype=torch.long)
    valid = torch.zeros((R, T), dtype=torch.bool)
    logits_at = torch.zeros((R, T), dtype=torch.bool)
    value_at = torch.zeros((R, T), dtype=torch.bool)
    for i, r in enumerate(rows):
        n = len(r)
        ids[i, :n], pos[i, :n], copy[i, :n], block[i, :n] = r.input_ids, r.position_ids, r.copy, r.block
        valid[i, :n] = True
        logits_at[i, r.logit_slots] = True
        value_at[i, r.value_slots] = True
    # Row-major order of logits_at must match the per-token metadata order: slots ascend per row.
    order = [torch.argsort(r.logit_slots) for r in rows]

    def pick(attr: str) -> torch.Tensor:
        return torch.cat([getattr(r, attr)[o] for r, o in zip(rows, order)])

    return MicroBatch(
        input_ids=ids, position_ids=pos, attn_mask=SlotMask(copy, block, valid), logits_at=logits_at,
        value_at=value_at, targets=pick("targets"), token_index=pick("token_index"),
        traj_index=torch.cat([torch.full((len(o),), r.traj_index, dtype=torch.long) for r, o in zip(rows, order)]),
        row_weight=pick("weights").float(),
        images=None if images is None else images.for_rows([r.traj_index for r in rows]))


def micro_batches(rows: list[Row], token_budget: int, pad_id: int,
                  images: TrajectoryImages | None = None) -> list[MicroBatch]:
    """Greedy packing of length-sorted rows so that rows × padded length ≤ token_budget."""
    if not rows:
        return []
    ordered = sorted(rows, key=len, reverse=True)
    if len(ordered[0]) > token_budget:
        raise ValueError(f"algo.token_budget={token_budget} is smaller than the longest row ({len(ordered[0])} "
                         f"tokens, of trajectory {ordered[0].traj_index})")
    groups, current = [], []
    for row in ordered:
        if current and (len(current) + 1) * len(current[0]) > token_budget:
            groups.append(current)
            current = []
        current.append(row)
    groups.append(current)
    with one_thread():  # small fills and copies: 25x faster on one thread than on 2 busy cores
        return [collate(g, pad_id, images) for g in groups]
