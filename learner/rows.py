"""Training rows (docs/design.md §6.1), built with tensor ops from step maps. Two layouts serve every objective:

`copy_row` (block-causal models): `[clean prompt+response | noisy copies of chosen blocks]`. Clean
slots attend block-causally; a noisy copy of block b sees clean blocks < b and itself. Noisy copies
reuse the clean position ids, so a trained token sees exactly the context the sampler saw.

`flat_row`: one partially masked sequence — full attention (LLaDA/Dream, all slots one copy) or
block-causal over the sequence itself (mean-field baselines on block models).

TraceRL: in round r every block trains its r-th shrunk step group; its copy shows the tokens
committed before that group and masks the rest. Rounds are either one row each (copy id 1), or
packed after one shared clean copy (copy id r + 1, so the rounds' copies of a block never see each
other) up to a token budget: (K+1)·L slots instead of 2K·L (`round_rows`, all trajectories of a
block size at once, for TraceRL and AGRPO). Full-attention models: one flat row per group. The
attention rule itself is models/slot_mask.py.
"""
from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from typing import Iterator

import numpy as np
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


@dataclass
class Canvases:
    """Sequences end to end as `Sequence.of` lays them out, each padded to whole blocks so that a
    `[n_blocks, B]` view makes every block a row. Steps are int32: prompt -1 (always shown), slots
    the sampler never reached (canvas, block padding) NEVER (never shown)."""
    ids: torch.Tensor    # [S] long
    steps: torch.Tensor  # [S] int32
    start: list[int]     # first slot of each sequence
    P: list[int]         # prompt lengths
    L: list[int]         # response lengths
    N: list[int]         # unpadded sequence lengths

    NEVER = torch.iinfo(torch.int32).max

    @classmethod
    def of(cls, trajs: list[Trajectory], block_size: int, mask_id: int) -> "Canvases":
        P = [len(t.prompt_ids) for t in trajs]
        L = [len(t.response_ids) for t in trajs]
        N = [p + max(t.canvas_len, n + len(t.tail_ids)) for p, n, t in zip(P, L, trajs)]
        M = [-(n // -block_size) * block_size for n in N]
        fill = [m - p - n - len(t.tail_ids) for m, p, n, t in zip(M, P, L, trajs)]  # canvas + block padding
        chain, rep = itertools.chain.from_iterable, itertools.repeat
        # np.fromiter reads the Python lists ~8x faster than torch.tensor does.
        ids = np.fromiter(chain(x for t, f in zip(trajs, fill)
                                for x in (t.prompt_ids, t.response_ids, t.tail_ids, rep(mask_id, f))), np.int64, sum(M))
        steps = np.fromiter(chain(x for t, p, f in zip(trajs, P, fill)
                                  for x in (rep(-1, p), t.step_map, t.tail_steps, rep(cls.NEVER, f))), np.int32, sum(M))
        return cls(torch.from_numpy(ids), torch.from_numpy(steps), list(itertools.accumulate([0] + M[:-1])), P, L, N)


def round_rows(trajs: list[Trajectory], indices: list[int], block_size: int, shrink: int, mask_id: int,
               pack_budget: int | None, weights: list[torch.Tensor] | None = None,
               trained: list[torch.Tensor] | None = None) -> list[Row]:
    """`[clean | noisy copies]` rows of rounds for trajectories of one block size. In round r every
    block with an r-th shrunk step group gets a copy: the block as it was just before the group's
    first step, training the group's tokens (factor `weights` [L], default 1). `trained` [L] bool
    restricts the groups to those slots' steps (AGRPO's drawn steps). Rows: one per round
    (pack_budget None), or consecutive rounds after one clean copy (copy id r + 1) while the row
    stays within pack_budget slots (a round alone may exceed it; batching then names it).

    The groups come from a few ops over all blocks at once; each row is then a handful of ops on
    tensors of its own size (small temporaries the allocator reuses: one large temporary per
    field costs more in page faults than the ops themselves)."""
    B, n = block_size, len(trajs)
    cv = Canvases.of(trajs, B, mask_id)
    if sum(cv.L) == 0:
        return []
    S, big = cv.ids.shape[0], Canvases.NEVER
    # Response slots: +1 at each response's start, -1 after its end, summed.
    edge = torch.zeros(S + 1, dtype=torch.int32)
    first_resp = torch.tensor([s + p for s, p in zip(cv.start, cv.P)])
    edge.index_add_(0, first_resp, torch.ones(n, dtype=torch.int32))
    edge.index_add_(0, first_resp + torch.tensor(cv.L), torch.full((n,), -1, dtype=torch.int32))
    resp = edge.cumsum(0, dtype=torch.int32)[:S].bool()
    if trained is not None or weights is not None:
        at = resp.nonzero().squeeze(1)
    w = None if weights is None else torch.zeros(S).index_copy_(0, at, torch.cat(weights).float())
    if trained is not None:
        resp.index_copy_(0, at, torch.cat(trained))
    # Shrunk groups per block: sort each block's steps (untrained slots last), rank the distinct ones.
    key, order = torch.where(resp, cv.steps, big).view(-1, B).sort(dim=1)
    new = torch.ones_like(key, dtype=torch.bool)
    torch.ne(key[:, 1:], key[:, :-1], out=new[:, 1:])
    rank = new.cumsum(1, dtype=torch.int32)
    rank -= 1
    real = key != big
    group = torch.where(real, rank // shrink, -1)
    round_of = torch.empty_like(group).scatter_(1, order, group)  # per slot: its round, -1 if untrained
    G = -(-B // shrink)
    # The first step of every (block, group); column G collects the rest.
    col = torch.where(new & real & (rank % shrink == 0), group, G).long()
    firsts = torch.full((key.shape[0], G + 1), big, dtype=torch.int32).scatter_(1, col, key)[:, :G].contiguous()
    has = firsts != big  # [blocks, G]: the block has a copy in round r
    # Slots per (sequence, round); only a sequence's last block may be cut short by its end.
    blen = torch.full((key.shape[0],), B, dtype=torch.int32)
    cut = [(s + n) // B for s, n in zip(cv.start, cv.N) if n % B]
    blen[cut] = torch.tensor([n % B for n in cv.N if n % B], dtype=torch.int32)
    owner = torch.repeat_interleave(torch.arange(n), torch.tensor([-(k // -B) for k in cv.N]))
    sizes = torch.zeros(n, G, dtype=torch.int32).index_add_(0, owner, has * blen[:, None])
    clean = [((p + k - 1) // B) * B for p, k in zip(cv.P, cv.L)]  # nothing reads the last block's clean copy
    ids2, steps2, firsts1 = cv.ids.view(-1, B), cv.steps.view(-1, B), firsts.view(-1)
    span = torch.arange(max(clean) + 1)
    span_block, in_block = span // B, torch.arange(B)
    out = []
    for t, a, e in _pack(sizes.tolist(), clean, pack_budget):
        s0, C, N, P = cv.start[t], clean[t], cv.N[t], cv.P[t]
        # This row's copies in (round, block) order.
        rb = has[s0 // B:(s0 + N - 1) // B + 1, a:e].t().nonzero()
        cr, cb = rb[:, 0] + a, rb[:, 1]
        gb = cb + s0 // B
        # The row's fields with whole blocks, written in place: [C] clean slots, then [copies, B].
        fields = [torch.empty(C + gb.shape[0] * B, dtype=torch.long) for _ in range(4)]
        ids, pos, copy, block = fields
        noisy = [f[C:].view(-1, B) for f in fields]
        ids[:C], pos[:C], copy[:C], block[:C] = cv.ids[s0:s0 + C], span[:C], 0, span_block[:C]
        torch.index_select(ids2, 0, gb, out=noisy[0])
        noisy[0].masked_fill_(_at(steps2, gb) >= _at(firsts1, gb * G + cr)[:, None], mask_id)
        torch.add((cb * B)[:, None], in_block, out=noisy[1])
        noisy[2][:] = (cr + 1 if pack_budget is not None else torch.ones_like(cr))[:, None]
        noisy[3][:] = cb[:, None]
        hit = (_at(round_of, gb) == cr[:, None]).view(-1).nonzero().squeeze(1)
        g = _at(noisy[1].view(-1), hit)  # position of each trained token
        slots = hit + C
        if N % B:  # the sequence's last block is cut short: drop its slots after the end
            keep = pos < N
            slots = _at(keep.cumsum(0), slots) - 1
            fields = [f[keep] for f in fields]
        out.append(Row(indices[t], *fields, value_slots=slots, logit_slots=slots, targets=_at(cv.ids, g + s0),
                       token_index=g - P, weights=torch.ones(hit.shape[0]) if w is None else _at(w, g + s0),
                       round_index=a))
    return out


def _pack(sizes: list[list[int]], clean: list[int], budget: int | None) -> list[tuple[int, int, int]]:
    """(sequence, first round, end round) of every row: rounds of `sizes` slots after a clean copy,
    packed while the row stays within budget (None: one row per round)."""
    spans = []
    for t, (sz, C) in enumerate(zip(sizes, clean)):
        rounds = sum(1 for k in sz if k)  # a sequence's rounds are 0..R-1: no gaps
        first, size = 0, C
        for r in range(rounds):
            if budget is None or (r > first and size + sz[r] > budget):
                if r > first:
                    spans.append((t, first, r))
                first, size = r, C
            size += sz[r]
        if rounds:
            spans.append((t, first, rounds))
    return spans


def _at(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x.index_select(0, index)  # several times faster than x[index] on CPU


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
    """Row building and collation are many small tensor ops: intra-op threads only add
    synchronisation (10-25× slower measured on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _trace_rows(trajs: list[Trajectory], indices: list[int], attention: str, shrink: int, mask_id: int,
                shift: int, pack_budget: int | None) -> list[Row]:
    if attention != "block_causal":
        rows = []
        for seq, i in zip((Sequence.of(t, mask_id) for t in trajs), indices):
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
        rows += round_rows([trajs[k] for k in ks], [indices[k] for k in ks], B, shrink, mask_id, pack_budget)
    return rows
