"""The Python row builder of commit add483c, kept verbatim as the test oracle (and the
baseline bench/learner.py times) of the tensor one in learner/rows.py.

Training rows (docs/design.md §6.1). Two layouts serve every objective:

`copy_row` (block-causal models): `[clean prompt+response | noisy copies of chosen blocks]`. Clean
slots attend block-causally; a noisy copy of block b sees clean blocks < b and itself. Noisy copies
reuse the clean position ids, so a trained token sees exactly the context the sampler saw.

`flat_row`: one partially masked sequence — full attention (LLaDA/Dream, all slots one copy) or
block-causal over the sequence itself (mean-field baselines on block models).

TraceRL: in round r every block trains its r-th shrunk step group; its copy shows the tokens
committed before that group and masks the rest. Full-attention models: one flat row per group.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rollout.trajectory import Trajectory


@dataclass
class Row:
    traj_index: int
    round_index: int = 0
    input_ids: list[int] = field(default_factory=list)
    position_ids: list[int] = field(default_factory=list)
    noisy: list[bool] = field(default_factory=list)
    block: list[int] = field(default_factory=list)
    value_slots: list[int] = field(default_factory=list)  # the trained token's own (noisy) slot
    logit_slots: list[int] = field(default_factory=list)  # where it is predicted (slot - shift)
    targets: list[int] = field(default_factory=list)
    token_index: list[int] = field(default_factory=list)  # index into response_ids
    weights: list[float] = field(default_factory=list)    # objective-specific per-token factor

    def add(self, token: int, position: int, noisy: bool, block: int) -> int:
        self.input_ids.append(token)
        self.position_ids.append(position)
        self.noisy.append(noisy)
        self.block.append(block)
        return len(self.input_ids) - 1

    def train(self, slot: int, target: int, token_index: int, shift: int, weight: float) -> None:
        self.value_slots.append(slot)
        self.logit_slots.append(slot - shift)
        self.targets.append(target)
        self.token_index.append(token_index)
        self.weights.append(weight)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class Sequence:
    """prompt + response (+ sampler tail/canvas) ids with per-slot commit steps."""
    ids: list[int]
    steps: list[int]
    prompt_len: int
    response_len: int

    @classmethod
    def of(cls, t: Trajectory, mask_id: int) -> "Sequence":
        pad = max(t.canvas_len - len(t.response_ids) - len(t.tail_ids), 0)
        never = max(t.step_map, default=0) + 1  # slots the sampler never reached stay masked
        return cls(t.prompt_ids + t.response_ids + t.tail_ids + [mask_id] * pad,
                   [0] * len(t.prompt_ids) + t.step_map + t.tail_steps + [never] * pad,
                   len(t.prompt_ids), len(t.response_ids))

    def is_response(self, p: int) -> bool:
        return self.prompt_len <= p < self.prompt_len + self.response_len


# A copy: (block, visible[slot in block], trained[slot in block] -> weight or None)
Copy = tuple[int, list[bool], list[float | None]]


def copy_row(seq: Sequence, block_size: int, copies: list[Copy], mask_id: int, traj_index: int,
             round_index: int = 0) -> Row:
    B = block_size
    last = (seq.prompt_len + seq.response_len - 1) // B
    row = Row(traj_index, round_index)
    # Nothing reads the clean copy of the last response block, so the clean part stops before it.
    for p in range(last * B):
        row.add(seq.ids[p], p, False, p // B)
    for b, visible, trained in copies:
        for k, p in enumerate(range(b * B, min((b + 1) * B, len(seq.ids)))):
            slot = row.add(seq.ids[p] if visible[k] else mask_id, p, True, b)
            if trained[k] is not None:
                row.train(slot, seq.ids[p], p - seq.prompt_len, 0, trained[k])
    return row


def flat_row(seq: Sequence, visible: list[bool], trained: list[float | None], mask_id: int,
             block_size: int | None, shift: int, traj_index: int, round_index: int = 0) -> Row:
    """block_size None: full attention (one bidirectional copy); else block-causal clean slots."""
    row = Row(traj_index, round_index)
    for p, tok in enumerate(seq.ids):
        if block_size is None:
            slot = row.add(tok if visible[p] else mask_id, p, True, 0)
        else:
            slot = row.add(tok if visible[p] else mask_id, p, False, p // block_size)
        if trained[p] is not None:
            row.train(slot, tok, p - seq.prompt_len, shift, trained[p])
    return row


def shrink_groups(steps: list[int], shrink: int) -> list[list[int]]:
    """Distinct step values in order, merged s at a time: [[1, 2], [3, 4], [5]] for s = 2."""
    distinct = sorted(set(steps))
    return [distinct[i:i + shrink] for i in range(0, len(distinct), shrink)]


def block_step_groups(seq: Sequence, block_size: int, shrink: int) -> dict[int, list[list[int]]]:
    """Per response block, its shrunk step groups (response tokens only; tails are never trained)."""
    B, P, L = block_size, seq.prompt_len, seq.response_len
    return {b: shrink_groups([seq.steps[p] for p in range(max(b * B, P), min((b + 1) * B, P + L))], shrink)
            for b in range(P // B, (P + L - 1) // B + 1)}


def state_copy(seq: Sequence, block_size: int, b: int, group: list[int], weight: float) -> Copy:
    """Block b as it was just before `group`'s first step, training the group's tokens."""
    B, first, members = block_size, group[0], set(group)
    span = range(b * B, min((b + 1) * B, len(seq.ids)))
    visible = [p < seq.prompt_len or seq.steps[p] < first for p in span]
    trained = [weight if seq.is_response(p) and seq.steps[p] in members else None for p in span]
    return b, visible, trained


def state_row(seq: Sequence, group: list[int], mask_id: int, shift: int, traj_index: int,
              round_index: int, weight: float) -> Row:
    """Full attention: the canvas just before `group`'s first step, training the group's tokens."""
    members = set(group)
    visible = [p < seq.prompt_len or s < group[0] for p, s in enumerate(seq.steps)]
    trained = [weight if seq.is_response(p) and s in members else None for p, s in enumerate(seq.steps)]
    return flat_row(seq, visible, trained, mask_id, None, shift, traj_index, round_index)


def trace_rows(traj: Trajectory, traj_index: int, attention: str, shrink: int, mask_id: int,
               shift: int = 0) -> list[Row]:
    """TraceRL rows for one trajectory: every committed response token is trained exactly once."""
    seq = Sequence.of(traj, mask_id)
    if attention != "block_causal":
        return [state_row(seq, g, mask_id, shift, traj_index, r, 1.0)
                for r, g in enumerate(shrink_groups(traj.step_map, shrink))]
    groups = block_step_groups(seq, traj.block_size, shrink)
    return [copy_row(seq, traj.block_size,
                     [state_copy(seq, traj.block_size, b, g[r], 1.0) for b, g in groups.items() if r < len(g)],
                     mask_id, traj_index, r)
            for r in range(max(len(g) for g in groups.values()))]


def row_mask(noisy: torch.Tensor, block: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The dense [R, T, T] mask of commit add483c from per-slot specs [R, T]: clean→clean
    block-causal; noisy→clean strictly earlier blocks; noisy→noisy within the same copy."""
    qn, kn = noisy[:, :, None], noisy[:, None, :]
    qb, kb = block[:, :, None], block[:, None, :]
    allowed = (~qn & ~kn & (kb <= qb)) | (qn & ~kn & (kb < qb)) | (qn & kn & (kb == qb))
    eye = torch.eye(noisy.shape[1], dtype=torch.bool)[None]
    return (allowed & valid[:, None, :]) | eye
