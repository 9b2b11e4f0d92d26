"""Each baseline's masks and weights are the ones its paper defines; SFT rows; TraceRL learns."""

import pytest
import torch

from helpers import MASK, params, prompts_mixed, tiny_model
from learner.algo_config import AlgoConfig
from learner.objectives import OBJECTIVES, sft_trajectory
from learner.rows import Sequence, block_step_groups
from rollout.sampler import generate


@pytest.fixture(scope="module")
def setup():
    model = tiny_model(4)
    trajs = generate(model, prompts_mixed(4) * 2, params(max_new_tokens=16), seeds=list(range(8)))
    return model, trajs


def build_rows(trajs, algo, cfg, gen):
    return algo.objective.rows(trajs, algo, cfg, gen)


def test_registry_names_every_objective_and_rejects_others():
    with pytest.raises(ValueError) as err:
        AlgoConfig(name="grpo")
    assert all(repr(name) in str(err.value) for name in OBJECTIVES), str(err.value)
    for name, objective in OBJECTIVES.items():  # the module's declared name is its key, and validates
        assert objective.name == name and AlgoConfig(name=name).objective is objective


def response_slots(row, traj):
    P = len(traj.prompt_ids)
    return {pos: slot for slot, pos in enumerate(row.position_ids.tolist()) if P <= pos < P + len(traj.response_ids)}


def test_coupled_grpo_scores_each_token_exactly_once_in_complementary_passes(setup):
    model, trajs = setup
    rows = build_rows(trajs, AlgoConfig(name="coupled_grpo"), model.config, torch.Generator().manual_seed(0))
    for i, t in enumerate(trajs):
        pair = [r for r in rows if r.traj_index == i]
        assert len(pair) in (1, 2)  # a pass whose mask is empty trains nothing and is dropped
        scored = sorted(j for r in pair for j in r.token_index.tolist())
        assert scored == list(range(len(t.response_ids)))
        weights = {r.round_index: set(r.weights.tolist()) for r in pair}
        if len(pair) == 2:
            (w1,), (w2,) = weights[0], weights[1]
            ratio = 1 / w1
            assert 0.2 <= ratio <= 0.8 and w2 == pytest.approx(1 / (1 - ratio))
        for r in pair:  # masked exactly where trained; the other pass shows these tokens
            slots = response_slots(r, t)
            trained = set(r.token_index.tolist())
            for j in range(len(t.response_ids)):
                assert bool(r.input_ids[slots[len(t.prompt_ids) + j]] == MASK) == (j in trained)


def test_diffu_grpo_masks_completion_fully_and_prompt_at_p(setup):
    model, trajs = setup
    algo = AlgoConfig(name="diffu_grpo", d1_prompt_mask_p=0.3)
    masked_prompt, total_prompt = 0, 0
    draws = [build_rows(trajs, algo, model.config, torch.Generator().manual_seed(s)) for s in range(40)]
    for rows in draws:
        for r in rows:
            t = trajs[r.traj_index]
            P = len(t.prompt_ids)
            assert sorted(r.token_index.tolist()) == list(range(len(t.response_ids)))
            assert all(r.input_ids[s] == MASK for pos, s in response_slots(r, t).items())
            masked_prompt += int((r.input_ids[:P] == MASK).sum())
            total_prompt += P
    assert abs(masked_prompt / total_prompt - 0.3) < 0.05
    # A fresh mask per inner iteration: different generator states give different prompt masks.
    assert [r.input_ids.tolist() for r in draws[0]] != [r.input_ids.tolist() for r in draws[1]]


def test_random_masking_trains_only_masked_tokens(setup):
    model, trajs = setup
    rows = build_rows(trajs, AlgoConfig(name="random_masking"), model.config, torch.Generator().manual_seed(0))
    assert len(rows) == len(trajs)
    for r in rows:
        t = trajs[r.traj_index]
        slots = response_slots(r, t)
        masked = {p - len(t.prompt_ids) for p, s in slots.items() if r.input_ids[s] == MASK}
        assert masked == set(r.token_index.tolist()) and masked


@pytest.mark.parametrize("sampling", ["uniform", "entropy"])
def test_agrpo_draws_m_steps_with_unbiased_weights(setup, sampling):
    model, trajs = setup
    M = 3
    algo = AlgoConfig(name="agrpo", agrpo_samples=M, agrpo_sampling=sampling)
    t = trajs[0]
    n_steps = len(set(t.step_map))
    # E[Σ_drawn w·1{step}] = 1 for every step: the estimate of a per-step sum is unbiased.
    counts = torch.zeros(max(t.step_map) + 1)
    trials = 400
    for s in range(trials):
        for r in build_rows([t], algo, model.config, torch.Generator().manual_seed(s)):
            for j, w in zip(r.token_index.tolist(), r.weights.tolist()):
                counts[t.step_map[j]] += w / t.step_map.count(t.step_map[j])
    est = counts[sorted(set(t.step_map))] / trials
    assert torch.allclose(est, torch.ones(n_steps), atol=0.25)
    rows = build_rows([t], algo, model.config, torch.Generator().manual_seed(0))
    drawn = {t.step_map[j] for r in rows for j in r.token_index.tolist()}
    assert 1 <= len(drawn) <= M
    for r in rows:  # every trained token of a drawn step, in the state before that step
        trained = r.token_index.tolist()
        for j in trained:
            assert all(t.step_map[k] != t.step_map[j] or k in trained for k in range(len(t.step_map)))


def test_sft_semi_ar_masks_each_block_and_fills_after_eos():
    model = tiny_model(4)
    pair = sft_trajectory([2, 3, 4, 5, 6], [7, 8, 9, 1], 4, eos_id=1)
    assert pair.tail_ids == [1, 1, 1] and (5 + 4 + 3) % 4 == 0
    rows = build_rows([pair], AlgoConfig(name="sft_semi_ar"), model.config, torch.Generator().manual_seed(0))
    (row,) = rows
    seq = Sequence.of(pair, MASK)
    blocks = block_step_groups(seq, 4, 1)
    noisy_blocks = {int(row.block[s]) for s in range(len(row)) if row.noisy[s]}
    assert noisy_blocks == set(blocks)
    for slot, idx in zip(row.value_slots.tolist(), row.token_index.tolist()):
        assert row.input_ids[slot] == MASK and row.noisy[slot]
        assert idx >= 0  # never a prompt token
    for s in range(len(row)):  # prompt slots inside a noisy copy stay visible
        if row.noisy[s] and row.position_ids[s] < 5:
            assert row.input_ids[s] != MASK


def test_trace_sft_trains_every_token_once(setup):
    model, trajs = setup
    rows = build_rows(trajs, AlgoConfig(name="sft_trace"), model.config, torch.Generator())
    for i, t in enumerate(trajs):
        assert sorted(j for r in rows if r.traj_index == i for j in r.token_index.tolist()) == list(
            range(len(t.response_ids))
        )
