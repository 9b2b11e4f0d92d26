"""Training rows (docs/design.md §6.1), built with tensor ops from step maps. Two layouts serve every objective:

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

import contextlib
import itertools
from dataclasses import dataclass
from typing import Iterator

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

    def select(self, keep: torch.Tensor | slice) -> "Copies":
        return Copies(self.pos[keep], self.copy[keep], self.visible[keep], self.weight[keep])

    @staticmethod
    def cat(parts: list["Copies"]) -> "Copies":
        return Copies(*(torch.cat([getattr(c, f) for c in parts]) for f in ("pos", "copy", "visible", "weight")))


def _trained(row_slots: torch.Tensor, seq: Sequence, pos: torch.Tensor, weight: torch.Tensor, shift: int) -> dict:
    on = (~torch.isnan(weight)).nonzero().squeeze(1)
    slots, at = _at(row_slots, on), _at(pos, on)
    return dict(value_slots=slots, logit_slots=slots - shift, targets=_at(seq.ids, at),
                token_index=at - seq.prompt_len, weights=_at(weight, on).float())


def copy_row(seq: Sequence, block_size: int, copies: Copies, mask_id: int, traj_index: int,
             round_index: int = 0) -> Row:
    B = block_size
    # Nothing reads the clean copy of the last response block, so the clean part stops before it.
    clean = torch.arange(((seq.prompt_len + seq.response_len - 1) // B) * B)
    pos = torch.cat([clean, copies.pos])
    ids = torch.cat([seq.ids[:clean.shape[0]], torch.where(copies.visible, _at(seq.ids, copies.pos), mask_id)])
    slots = torch.arange(clean.shape[0], pos.shape[0])
    return Row(traj_index, ids, pos, torch.cat([torch.zeros_like(clean), copies.copy]), pos // B,
               round_index=round_index, **_trained(slots, seq, copies.pos, copies.weight, 0))


def flat_row(seq: Sequence, visible: torch.Tensor, weight: torch.Tensor, mask_id: int, block_size: int | None,
             shift: int, traj_index: int, round_index: int = 0) -> Row:
    """block_size None: full attention (one bidirectional copy); else block-causal clean slots."""
    pos = torch.arange(seq.ids.shape[0])
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


def state_copies(seqs: list[Sequence], block_size: int, shrink: int, weights: list[torch.Tensor], packed: bool,
                 trained: list[torch.Tensor] | None = None) -> list[tuple[Copies, list[int]]]:
    """For every sequence at once (ops over all their slots, no per-token Python): the noisy copies
    of its rounds, round after round, and each round's slot count. In round r every block with an
    r-th shrunk step group gets a copy: the block as it was just before the group's first step,
    training the group's tokens with `weights` [L]. `trained` [L] bool restricts the groups to
    those slots' steps (AGRPO's drawn steps)."""
    n, B = len(seqs), block_size
    N = torch.tensor([s.ids.shape[0] for s in seqs])
    P = torch.tensor([s.prompt_len for s in seqs])
    L = torch.tensor([s.response_len for s in seqs])
    if n == 0 or int(L.sum()) == 0:
        return [(_no_copies(), []) for _ in seqs]
    start = torch.cumsum(N, 0) - N
    steps = torch.cat([s.steps for s in seqs])
    traj = torch.repeat_interleave(torch.arange(n), L)
    local = torch.arange(int(L.sum())) - _at(torch.cumsum(L, 0) - L - P, traj)
    at = _at(start, traj) + local  # response slots in the concatenated sequences
    keep = None if trained is None else torch.cat(trained).nonzero().squeeze(1)

    def kept(x: torch.Tensor) -> torch.Tensor:
        return x if keep is None else _at(x, keep)

    NB, S = int(N.max()) // B + 1, int(steps.max()) + 2
    # Shrunk groups: distinct steps of each (sequence, block) in order, merged `shrink` at a time.
    uniq, inv = torch.unique((kept(traj) * NB + kept(local) // B) * S + _at(steps, kept(at)), return_inverse=True)
    _, per_block = torch.unique_consecutive(uniq // S, return_counts=True)  # uniq is sorted
    first_of_block = torch.repeat_interleave(torch.cumsum(per_block, 0) - per_block, per_block)
    group = (torch.arange(uniq.shape[0]) - first_of_block) // shrink
    rounds = _at(group, inv)  # per kept response slot
    firsts = _at(_at(uniq, first_of_block + group * shrink) % S, inv)
    # One copy per (sequence, round, block), ordered that way.
    R = int(rounds.max()) + 1
    pair, pinv = torch.unique((kept(traj) * R + rounds) * NB + kept(local) // B, return_inverse=True)
    pt, pr, pb = pair // (R * NB), pair // NB % R, pair % NB
    first = torch.zeros_like(pair).index_copy_(0, pinv, firsts)
    # Every slot of every copy (a last block may be cut short by the sequence's end).
    sel = (pb[:, None] * B + torch.arange(B)[None] < _at(N, pt)[:, None]).view(-1).nonzero().squeeze(1)
    c = sel // B
    tc, rc = _at(pt, c), _at(pr, c)
    pos = _at(pb, c) * B + sel % B
    g = _at(start, tc) + pos
    round_at = torch.full_like(steps, -1).index_copy_(0, kept(at), rounds)
    w_at = torch.full(steps.shape, float("nan")).index_copy_(0, kept(at), kept(torch.cat(weights).float()))
    flat = Copies(pos, rc + 1 if packed else torch.ones_like(c),
                  (pos < _at(P, tc)) | (_at(steps, g) < _at(first, c)),
                  torch.where(_at(round_at, g) == rc, _at(w_at, g), float("nan")))
    sizes = torch.zeros(n * R, dtype=torch.long).index_add_(0, tc * R + rc, torch.ones_like(c)).view(n, R)
    out, offset = [], 0
    for sz in sizes.tolist():
        sz = [k for k in sz if k]  # a sequence's rounds are 0..K-1: no gaps
        out.append((flat.select(slice(offset, offset + sum(sz))), sz))
        offset += sum(sz)
    return out


def _at(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x.index_select(0, index)  # several times faster than x[index] on CPU


def _no_copies() -> Copies:
    empty = torch.zeros(0, dtype=torch.long)
    return Copies(empty, empty, empty.bool(), empty.float())


def round_rows(seq: Sequence, block_size: int, copies: Copies, sizes: list[int], mask_id: int, traj_index: int,
               pack_budget: int | None) -> list[Row]:
    """One row per round (pack_budget None), or consecutive rounds after one clean copy while the
    row stays within pack_budget slots (a round alone may exceed it; batching then names it).
    `copies` holds the rounds one after another, `sizes` their slot counts."""
    clean = ((seq.prompt_len + seq.response_len - 1) // block_size) * block_size
    rows, first, size = [], 0, clean
    for r, k in enumerate(sizes):
        if pack_budget is None or (r > first and size + k > pack_budget):
            if r > first:
                rows.append((first, r))
            first, size = r, clean
        size += k
    if sizes:
        rows.append((first, len(sizes)))
    ends = [0] + list(itertools.accumulate(sizes))
    return [copy_row(seq, block_size, copies.select(slice(ends[a], ends[e])), mask_id, traj_index, a)
            for a, e in rows]


def state_row(seq: Sequence, group: list[int], weight: torch.Tensor, mask_id: int, shift: int, traj_index: int,
              round_index: int) -> Row:
    """Full attention: the canvas just before `group`'s first step, training the group's tokens
    with weight [N] (per slot; the prompt and tail are never trained)."""
    pos = torch.arange(seq.ids.shape[0])
    visible = (pos < seq.prompt_len) | (seq.steps < group[0])
    member = seq.is_response(pos) & torch.isin(seq.steps, torch.tensor(group))
    return flat_row(seq, visible, torch.where(member, weight, float("nan")), mask_id, None, shift, traj_index,
                    round_index)


def trace_rows(traj: Trajectory, traj_index: int, attention: str, shrink: int, mask_id: int,
               shift: int = 0, pack_budget: int | None = None) -> list[Row]:
    """TraceRL rows for one trajectory (see `trace_rows_batch`)."""
    return trace_rows_batch([traj], [traj_index], attention, shrink, mask_id, shift, pack_budget)


def trace_rows_batch(trajs: list[Trajectory], indices: list[int], attention: str, shrink: int, mask_id: int,
                     shift: int = 0, pack_budget: int | None = None) -> list[Row]:
    """TraceRL rows: every committed response token is trained exactly once. pack_budget: rounds
    packed on one clean copy up to that many slots per row (None: one row per round)."""
    with one_thread():
        return _trace_rows(trajs, indices, attention, shrink, mask_id, shift, pack_budget)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Row building is many small tensor ops: intra-op threads only add synchronisation (10× slower
    measured on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _trace_rows(trajs: list[Trajectory], indices: list[int], attention: str, shrink: int, mask_id: int,
                shift: int, pack_budget: int | None) -> list[Row]:
    seqs = [Sequence.of(t, mask_id) for t in trajs]
    if attention != "block_causal":
        rows = []
        for seq, i in zip(seqs, indices):
            ones = torch.ones(seq.ids.shape[0])
            rows += [state_row(seq, g, ones, mask_id, shift, i, r)
                     for r, g in enumerate(shrink_groups(seq.steps[seq.prompt_len:seq.prompt_len + seq.response_len],
                                                         shrink))]
        return rows
    by_block: dict[int, list[int]] = {}
    for k, t in enumerate(trajs):
        by_block.setdefault(t.block_size, []).append(k)
    rows = []
    for B, ks in by_block.items():
        group = [seqs[k] for k in ks]
        copies = state_copies(group, B, shrink, [torch.ones(s.response_len) for s in group], pack_budget is not None)
        for k, seq, (c, sizes) in zip(ks, group, copies):
            rows += round_rows(seq, B, c, sizes, mask_id, indices[k], pack_budget)
    return rows
