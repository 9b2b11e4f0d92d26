"""The tensor row builder equals the Python one of commit add483c (tests/learner/python_rows.py)
field by field on random step maps, and a packed row is exactly the per-round rows' noisy parts
laid after one shared clean copy."""
import pytest
import torch

from learner.rows import round_rows, trace_rows, trace_rows_batch
from rollout.trajectory import Trajectory
from tests.learner import python_rows

MASK = 99
FIELDS = ("input_ids", "position_ids", "block", "value_slots", "logit_slots", "targets", "token_index", "weights")


def random_trajectory(gen: torch.Generator, block: int, full: bool) -> Trajectory:
    """Steps grow block by block (the sampler decodes blocks in order), in any order inside one;
    some responses end with an EOS fill inside their last block (tail) or a longer canvas."""
    P = int(torch.randint(1, 3 * block, (), generator=gen))
    L = int(torch.randint(1, 6 * block, (), generator=gen))
    steps, step = [], 1
    for start in range(0, L + (P % block), block):
        n = min(block, L + P - max(start, 0)) if start else min(block - P % block, L)
        k = int(torch.randint(1, n + 1, (), generator=gen))
        steps += (step + torch.randint(0, k, (n,), generator=gen)).tolist()
        step += k
    steps = steps[:L]
    tail = int(torch.randint(0, block, (), generator=gen)) if not full else 0
    return Trajectory(prompt_ids=torch.randint(2, 50, (P,), generator=gen).tolist(),
                      response_ids=torch.randint(2, 50, (L,), generator=gen).tolist(), step_map=steps,
                      logprobs=[0.0] * L, entropies=[0.0] * L, block_size=block, finish_reason="eos",
                      num_forwards=max(steps), tail_ids=[1] * tail, tail_steps=[max(steps)] * tail,
                      canvas_len=L + int(torch.randint(0, 5, (), generator=gen)) if full else 0)


def as_lists(row) -> dict:
    return {f: getattr(row, f).tolist() for f in FIELDS} | {"noisy": row.noisy.tolist(),
                                                             "round": row.round_index, "traj": row.traj_index}


def python_lists(row) -> dict:
    return {f: getattr(row, f) for f in FIELDS} | {"noisy": row.noisy, "round": row.round_index, "traj": row.traj_index}


@pytest.mark.parametrize("shrink", [1, 2, 3])
@pytest.mark.parametrize("attention", ["block_causal", "full"])
def test_tensor_rows_equal_python_rows_on_random_step_maps(shrink, attention):
    gen = torch.Generator().manual_seed(shrink)
    shift = int(attention == "full" and shrink == 2)  # Dream-style shifted logits once
    for block in (2, 4, 8):  # all sequences of one block size in one batch of tensor ops
        trajs = [random_trajectory(gen, block, attention == "full") for _ in range(15)]
        ours = trace_rows_batch(trajs, list(range(15)), attention, shrink, MASK, shift)
        theirs = [r for i, t in enumerate(trajs) for r in python_rows.trace_rows(t, i, attention, shrink, MASK, shift)]
        assert [as_lists(r) for r in ours] == [python_lists(r) for r in theirs]
        assert all(r.copy.max() <= 1 for r in ours)


@pytest.mark.parametrize("shrink", [1, 2, 3])
def test_packed_row_is_the_rounds_noisy_parts_after_one_clean_copy(shrink):
    gen = torch.Generator().manual_seed(10 + shrink)
    for i in range(40):
        t = random_trajectory(gen, [2, 4, 8][i % 3], False)
        per_round = python_rows.trace_rows(t, i, "block_causal", shrink, MASK)
        (packed,) = trace_rows(t, i, "block_causal", shrink, MASK, pack_budget=10_000)
        clean = sum(not n for n in per_round[0].noisy)
        want = {"input_ids": per_round[0].input_ids[:clean], "position_ids": per_round[0].position_ids[:clean],
                "copy": [0] * clean, "block": per_round[0].block[:clean], "value_slots": [], "targets": [],
                "token_index": []}
        offset = clean
        for r, row in enumerate(per_round):
            assert row.input_ids[:clean] == per_round[0].input_ids[:clean]  # every round shares the clean copy
            want["input_ids"] += row.input_ids[clean:]
            want["position_ids"] += row.position_ids[clean:]
            want["copy"] += [r + 1] * (len(row) - clean)
            want["block"] += row.block[clean:]
            want["value_slots"] += [s - clean + offset for s in row.value_slots]
            want["targets"] += row.targets
            want["token_index"] += row.token_index
            offset += len(row) - clean
        assert {f: getattr(packed, f).tolist() for f in want} == want
        assert len(packed) == clean + sum(len(r) - clean for r in per_round)


def python_drawn_rows(t: Trajectory, i: int, drawn: set[int], weight: dict[int, float]) -> list[python_rows.Row]:
    """AGRPO's rows from the Python builder's pieces: in round r each block trains the r-th of its
    drawn steps, weighted per step."""
    seq, B = python_rows.Sequence.of(t, MASK), t.block_size
    P, L = seq.prompt_len, seq.response_len
    groups = {b: python_rows.shrink_groups([seq.steps[p] for p in range(max(b * B, P), min((b + 1) * B, P + L))
                                            if seq.steps[p] in drawn], 1)
              for b in range(P // B, (P + L - 1) // B + 1)}
    rows = [python_rows.copy_row(seq, B, [python_rows.state_copy(seq, B, b, g[r], 0.0)
                                          for b, g in groups.items() if r < len(g)], MASK, i, r)
            for r in range(max(len(g) for g in groups.values()))]
    for row in rows:
        row.weights = [weight[t.step_map[j]] for j in row.token_index]
    return rows


@pytest.mark.parametrize("block", [2, 4, 8])
def test_rows_of_drawn_steps_equal_python_rows(block):
    """round_rows restricted to some steps (AGRPO), with per-token weights, for a batch of sequences."""
    gen = torch.Generator().manual_seed(20 + block)
    trajs = [random_trajectory(gen, block, False) for _ in range(15)]
    drawn, weight, theirs = [], [], []
    for i, t in enumerate(trajs):
        steps = sorted(set(t.step_map))
        keep = {s for s, d in zip(steps, torch.rand(len(steps), generator=gen).tolist()) if d < 0.5} or {steps[-1]}
        w = dict(zip(steps, torch.rand(len(steps), generator=gen).tolist()))
        drawn.append(torch.tensor([s in keep for s in t.step_map]))
        weight.append(torch.tensor([w[s] for s in t.step_map]))
        theirs += python_drawn_rows(t, i, keep, {s: float(torch.tensor(v)) for s, v in w.items()})
    ours = round_rows(trajs, list(range(len(trajs))), block, 1, MASK, None, weight, drawn)
    assert [as_lists(r) for r in ours] == [python_lists(r) for r in theirs]
