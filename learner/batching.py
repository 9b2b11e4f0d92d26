"""Rows → padded micro-batches under a token budget, with the attention mask built from the row spec."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .rows import Row


@dataclass
class MicroBatch:
    input_ids: torch.Tensor     # [R, T]
    position_ids: torch.Tensor  # [R, T]
    attn_mask: torch.Tensor     # [R, T, T] bool
    logits_at: torch.Tensor     # [R, T] bool; the M trained tokens in row-major order
    value_at: torch.Tensor      # [R, T] bool; each trained token's own slot (value model reads here)
    targets: torch.Tensor       # [M]
    traj_index: torch.Tensor    # [M] which trajectory each trained token belongs to
    token_index: torch.Tensor   # [M] its index in that trajectory's response
    row_weight: torch.Tensor    # [M] objective-specific factor from row building (e.g. 1/t)
    # Per-token tensors [M] the objective attaches (advantages, old log-probs, loss weights, ...).
    data: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return int(self.targets.numel())

    def to(self, device: torch.device | str) -> "MicroBatch":
        moved = {k: v.to(device) for k, v in self.__dict__.items() if k != "data"}
        return MicroBatch(**moved, data={k: v.to(device) for k, v in self.data.items()})


def row_mask(noisy: torch.Tensor, block: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[R, T, T] from per-slot specs [R, T]: clean→clean block-causal; noisy→clean strictly earlier
    blocks; noisy→noisy within the same copy. Every slot sees itself (padding stays finite)."""
    qn, kn = noisy[:, :, None], noisy[:, None, :]
    qb, kb = block[:, :, None], block[:, None, :]
    allowed = (~qn & ~kn & (kb <= qb)) | (qn & ~kn & (kb < qb)) | (qn & kn & (kb == qb))
    eye = torch.eye(noisy.shape[1], dtype=torch.bool)[None]
    return (allowed & valid[:, None, :]) | eye


def collate(rows: list[Row], pad_id: int) -> MicroBatch:
    T = max(len(r) for r in rows)
    R = len(rows)
    ids = torch.full((R, T), pad_id, dtype=torch.long)
    pos = torch.zeros((R, T), dtype=torch.long)
    noisy = torch.zeros((R, T), dtype=torch.bool)
    block = torch.zeros((R, T), dtype=torch.long)
    valid = torch.zeros((R, T), dtype=torch.bool)
    logits_at = torch.zeros((R, T), dtype=torch.bool)
    value_at = torch.zeros((R, T), dtype=torch.bool)
    for i, r in enumerate(rows):
        n = len(r)
        ids[i, :n] = torch.tensor(r.input_ids)
        pos[i, :n] = torch.tensor(r.position_ids)
        noisy[i, :n] = torch.tensor(r.noisy)
        block[i, :n] = torch.tensor(r.block)
        valid[i, :n] = True
        logits_at[i, r.logit_slots] = True
        value_at[i, r.value_slots] = True
    # Row-major order of logits_at must match the per-token metadata order: slots ascend per row.
    order = [sorted(range(len(r.logit_slots)), key=r.logit_slots.__getitem__) for r in rows]
    def pick(attr: str, dtype: torch.dtype = torch.long) -> torch.Tensor:
        return torch.tensor([getattr(r, attr)[j] for r, o in zip(rows, order) for j in o], dtype=dtype)

    return MicroBatch(
        input_ids=ids, position_ids=pos, attn_mask=row_mask(noisy, block, valid), logits_at=logits_at, value_at=value_at,
        targets=pick("targets"), token_index=pick("token_index"),
        traj_index=torch.tensor([r.traj_index for r, o in zip(rows, order) for _ in o], dtype=torch.long),
        row_weight=pick("weights", torch.float32))


def micro_batches(rows: list[Row], token_budget: int, pad_id: int) -> list[MicroBatch]:
    """Greedy packing of length-sorted rows so that rows × padded length ≤ token_budget."""
    if not rows:
        return []
    ordered = sorted(rows, key=len, reverse=True)
    if len(ordered[0]) > token_budget:
        raise ValueError(f"learner.token_budget={token_budget} is smaller than the longest row "
                         f"({len(ordered[0])} tokens)")
    batches, current = [], []
    for row in ordered:
        if current and (len(current) + 1) * len(current[0]) > token_budget:
            batches.append(collate(current, pad_id))
            current = []
        current.append(row)
    batches.append(collate(current, pad_id))
    return batches
