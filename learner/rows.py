"""Training rows (DESIGN §6.1), built with tensor ops from step maps. Two layouts serve every objective:

`copy_row` (block-causal models): `[clean prompt+response | noisy copies of chosen blocks]`. Clean
slots attend block-causally; a noisy copy of block b sees clean blocks < b and itself. Noisy copies
reuse the clean position ids, so a trained token sees exactly the context the sampler saw.

`flat_row`: one partially masked sequence — full attention (LLaDA/Dream, all slots one copy) or
block-causal over the sequence itself (mean-field baselines on block models).

TraceRL: in round r every block trains its r-th shrunk step group; its copy shows the tokens
committed before that group and masks the rest. Rounds are either one row each (copy id 1), or
packed after one shared clean copy (copy id r + 1, so the rounds' copies of a block never see each
other) up to a token budget: (K+1)·L slots instead of 2K·L. Full-attention models: one flat row
per group. The attention rule itself is models/slot_mask.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rollout.trajectory import Trajectory


@dataclass
class Row:
    traj_index: int
    input_ids: torch.Tensor     # [n] long
    position_ids: torch.Tensor  # [n] long
    copy: torch.Tensor          # [n] long: 0 clean, c > 0 noisy copy c (models/slot_mask.py)
    block: torch.Tensor         # [n] long: absolute block
    value_slots: torch.Tensor   # [m] the trained token's own (noisy) slot, ascending
    logit_slots: torch.Tensor   # [m] where it is predicted (slot - shift)
    targets: torch.Tensor       # [m]
    token_index: torch.Tensor   # [m] index into response_ids
    weights: torch.Tensor       # [m] float32, objective-specific per-token factor
    round_index: int = 0        # the (first) round or pass this row trains

    @property
    def noisy(self) -> torch.Tensor:
        return self.copy > 0

    def __len__(self) -> int:
        return int(self.input_ids.numel())


@dataclass
class Sequence:
    """prompt + response (+ sampler tail/canvas) ids with per-slot commit steps."""
    ids: torch.Tensor    # [N] long
    steps: torch.Tensor  # [N] long
    prompt_len: int
    response_len: int

    @classmethod
    def of(cls, t: Trajectory, mask_id: int) -> "Sequence":
        pad = max(t.canvas_len - len(t.response_ids) - len(t.tail_ids), 0)
        never = max(t.step_map, default=0) + 1  # slots the sampler never reached stay masked
        return cls(torch.tensor(t.prompt_ids + t.response_ids + t.tail_ids + [mask_id] * pad, dtype=torch.long),
                   torch.tensor([0] * len(t.prompt_ids) + t.step_map + t.tail_steps + [never] * pad,
                                dtype=torch.long),
                   len(t.prompt_ids), len(t.response_ids))

    def is_response(self, p: torch.Tensor) -> torch.Tensor:
        return (p >= self.prompt_len) & (p < self.prompt_len + self.response_len)


@dataclass
class Copies:
    """Noisy block copies, slot by slot in row order (NaN weight = not trained)."""
    pos: torch.Tensor      # [n] canvas column
    copy: torch.Tensor     # [n] copy id ≥ 1
    visible: torch.Tensor  # [n] bool: shows the token, else the mask id
    weight: torch.Tensor   # [n] float32

    def select(self, keep: torch.Tensor) -> "Copies":
        return Copies(self.pos[keep], self.copy[keep], self.visible[keep], self.weight[keep])

    @staticmethod
    def cat(parts: list["Copies"]) -> "Copies":
        return Copies(*(torch.cat([getattr(c, f) for c in parts]) for f in ("pos", "copy", "visible", "weight")))


def _trained(row_slots: torch.Tensor, seq: Sequence, pos: torch.Tensor, weight: torch.Tensor, shift: int) -> dict:
    on = ~torch.isnan(weight)
    slots = row_slots[on]
    return dict(value_slots=slots, logit_slots=slots - shift, targets=seq.ids[pos[on]],
                token_index=pos[on] - seq.prompt_len, weights=weight[on].float())


def copy_row(seq: Sequence, block_size: int, copies: Copies, mask_id: int, traj_index: int,
             round_index: int = 0) -> Row:
    B = block_size
    # Nothing reads the clean copy of the last response block, so the clean part stops before it.
    clean = torch.arange(((seq.prompt_len + seq.response_len - 1) // B) * B)
    pos = torch.cat([clean, copies.pos])
    ids = torch.cat([seq.ids[clean], torch.where(copies.visible, seq.ids[copies.pos], mask_id)])
    slots = torch.arange(len(clean), len(pos))
    return Row(traj_index, ids, pos, torch.cat([torch.zeros_like(clean), copies.copy]), pos // B,
               round_index=round_index, **_trained(slots, seq, copies.pos, copies.weight, 0))


def flat_row(seq: Sequence, visible: torch.Tensor, weight: torch.Tensor, mask_id: int, block_size: int | None,
             shift: int, traj_index: int, round_index: int = 0) -> Row:
    """block_size None: full attention (one bidirectional copy); else block-causal clean slots."""
    pos = torch.arange(len(seq.ids))
    if block_size is None:
        copy, block = torch.ones_like(pos), torch.zeros_like(pos)
    else:
        copy, block = torch.zeros_like(pos), pos // block_size
    return Row(traj_index, torch.where(visible, seq.ids, mask_id), pos, copy, block, round_index=round_index,
               **_trained(pos, seq, pos, weight, shift))


def shrink_groups(steps: torch.Tensor, shrink: int) -> list[list[int]]:
    """Distinct step values in order, merged s at a time: [[1, 2], [3, 4], [5]] for s = 2."""
    distinct = torch.unique(torch.as_tensor(steps)).tolist()
    return [distinct[i:i + shrink] for i in range(0, len(distinct), shrink)]


def block_step_groups(seq: Sequence, block_size: int, shrink: int) -> dict[int, list[list[int]]]:
    """Per response block, its shrunk step groups (response tokens only; tails are never trained)."""
    B, P, L = block_size, seq.prompt_len, seq.response_len
    steps = seq.steps[P:P + L]
    return {b: shrink_groups(steps[max(b * B, P) - P:min((b + 1) * B, P + L) - P], shrink)
            for b in range(P // B, (P + L - 1) // B + 1)}


def block_groups(seq: Sequence, block_size: int, shrink: int,
                 trained: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For each response slot [L]: the index of its shrunk group within its block (its round) and
    that group's first step. `trained` [L] bool restricts the groups to those slots' steps (the
    others get round -1)."""
    P, L = seq.prompt_len, seq.response_len
    pos = torch.arange(P, P + L)
    keep = torch.ones(L, dtype=torch.bool) if trained is None else trained
    span = int(seq.steps.max()) + 2 if len(seq.steps) else 1
    uniq, inv = torch.unique(pos[keep] // block_size * span + seq.steps[pos[keep]], return_inverse=True)
    ublk = uniq // span  # uniq is sorted by (block, step): a block's steps are contiguous
    first_of_block = torch.searchsorted(ublk, ublk)
    group = (torch.arange(len(uniq)) - first_of_block) // shrink
    group_first_step = uniq[first_of_block + group * shrink] % span
    rounds = torch.full((L,), -1, dtype=torch.long)
    firsts = torch.zeros(L, dtype=torch.long)
    rounds[keep], firsts[keep] = group[inv], group_first_step[inv]
    return rounds, firsts


def state_copies(seq: Sequence, block_size: int, shrink: int, weight: torch.Tensor, packed: bool,
                 trained: torch.Tensor | None = None) -> list[Copies]:
    """Per round r, the noisy copies of every block that has an r-th group: block b as it was just
    before the group's first step, training the group's tokens with `weight` [L]."""
    B, P, N = block_size, seq.prompt_len, len(seq.ids)
    rounds, firsts = block_groups(seq, B, shrink, trained)
    on = rounds >= 0
    resp = torch.arange(P, P + seq.response_len)
    # One (round, block) pair per copy, ordered by round then block.
    pair = torch.unique(rounds[on] * (N // B + 1) + resp[on] // B)
    r, b = pair // (N // B + 1), pair % (N // B + 1)
    first = torch.zeros(len(pair), dtype=torch.long)
    first[torch.searchsorted(pair, rounds[on] * (N // B + 1) + resp[on] // B)] = firsts[on]
    pos = b[:, None] * B + torch.arange(B)[None]  # [pairs, B]
    inside = pos < N
    pos = pos.clamp(max=N - 1)
    visible = (pos < P) | (seq.steps[pos] < first[:, None])
    round_at = torch.full((N,), -1, dtype=torch.long)
    round_at[resp] = rounds
    w_at = torch.full((N,), float("nan"))
    w_at[resp] = weight.float()
    w = torch.where(round_at[pos] == r[:, None], w_at[pos], float("nan"))
    copy = (r + 1 if packed else torch.ones_like(r))[:, None].expand_as(pos)
    flat = Copies(pos[inside], copy[inside], visible[inside], w[inside])
    per_slot_round = r[:, None].expand_as(pos)[inside]
    return [flat.select(per_slot_round == k) for k in range(int(r.max()) + 1 if len(r) else 0)]


def round_rows(seq: Sequence, block_size: int, rounds: list[Copies], mask_id: int, traj_index: int,
               pack_budget: int | None) -> list[Row]:
    """One row per round (pack_budget None), or consecutive rounds after one clean copy while the
    row stays within pack_budget slots (a round alone may exceed it; batching then names it)."""
    if pack_budget is None:
        return [copy_row(seq, block_size, c, mask_id, traj_index, r) for r, c in enumerate(rounds)]
    clean = ((seq.prompt_len + seq.response_len - 1) // block_size) * block_size
    rows, start, size = [], 0, clean
    for r, c in enumerate(rounds):
        if r > start and size + len(c.pos) > pack_budget:
            rows.append((start, r))
            start, size = r, clean
        size += len(c.pos)
    if rounds:
        rows.append((start, len(rounds)))
    return [copy_row(seq, block_size, Copies.cat(rounds[a:e]), mask_id, traj_index, a) for a, e in rows]


def state_row(seq: Sequence, group: list[int], weight: torch.Tensor, mask_id: int, shift: int, traj_index: int,
              round_index: int) -> Row:
    """Full attention: the canvas just before `group`'s first step, training the group's tokens
    with weight [N] (per slot; the prompt and tail are never trained)."""
    pos = torch.arange(len(seq.ids))
    visible = (pos < seq.prompt_len) | (seq.steps < group[0])
    member = seq.is_response(pos) & torch.isin(seq.steps, torch.tensor(group))
    return flat_row(seq, visible, torch.where(member, weight, float("nan")), mask_id, None, shift, traj_index,
                    round_index)


def trace_rows(traj: Trajectory, traj_index: int, attention: str, shrink: int, mask_id: int,
               shift: int = 0, pack_budget: int | None = None) -> list[Row]:
    """TraceRL rows for one trajectory: every committed response token is trained exactly once.
    pack_budget: pack rounds on one clean copy up to that many slots per row (None: one row per round)."""
    seq = Sequence.of(traj, mask_id)
    L = seq.response_len
    if attention != "block_causal":
        ones = torch.ones(len(seq.ids))
        return [state_row(seq, g, ones, mask_id, shift, traj_index, r)
                for r, g in enumerate(shrink_groups(seq.steps[seq.prompt_len:seq.prompt_len + L], shrink))]
    rounds = state_copies(seq, traj.block_size, shrink, torch.ones(L), pack_budget is not None)
    return round_rows(seq, traj.block_size, rounds, mask_id, traj_index, pack_budget)
