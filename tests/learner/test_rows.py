"""TraceRL rows reproduce the sampler's contexts exactly in both layouts (one row per round, rounds
packed on one clean copy), and packing equals the naive computation."""
import pytest
import torch

from helpers import MASK, PAD, params, prompts_mixed, tiny_model
from learner.batching import micro_batches
from learner.logprobs import token_logprobs
from learner.losses import ppo_clip
from learner.rows import Sequence, block_step_groups, shrink_groups, trace_rows
from rollout.sampler import generate
from rollout.trajectory import Trajectory
from tests.learner.bruteforce import state_logprobs

LAYOUTS = {"per_round": None, "packed": 1024}


def rows_for(trajs, attention="block_causal", shrink=1, shift=0, pack=None):
    return [r for i, t in enumerate(trajs) for r in trace_rows(t, i, attention, shrink, MASK, shift, pack)]


def learner_vs_sampler(model, trajs, attention="block_causal", shift=0, pack=None) -> float:
    worst, seen = 0.0, 0
    for mb in micro_batches(rows_for(trajs, attention, 1, shift, pack), 1024, PAD):
        with torch.no_grad():
            lp, _ = token_logprobs(model, mb, MASK)
        rec = torch.tensor([trajs[i].logprobs[j] for i, j in zip(mb.traj_index.tolist(), mb.token_index.tolist())])
        worst = max(worst, float((lp - rec).abs().max()))
        seen += mb.num_tokens
    assert seen == sum(len(t.response_ids) for t in trajs), "every committed token is trained exactly once"
    return worst


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("block", [2, 4, 8])
@pytest.mark.parametrize("strategy", ["static", "dynamic"])
def test_learner_logprobs_equal_sampler_logprobs(block, strategy, layout):
    model = tiny_model(block)
    trajs = generate(model, prompts_mixed(block) * 2,
                     params(block_size=block, steps_per_block=min(block, 4), strategy=strategy, max_new_tokens=32),
                     seeds=list(range(8)))
    assert {len(t.prompt_ids) % block for t in trajs} != {0}, "prompts of both kinds"
    assert learner_vs_sampler(model, trajs, pack=LAYOUTS[layout]) <= 1e-4


@pytest.mark.parametrize("layout", LAYOUTS)
def test_learner_logprobs_equal_sampler_with_eos_inside_a_block(layout):
    model = tiny_model(4)
    trajs = generate(model, prompts_mixed(4) * 3, params(max_new_tokens=40), seeds=list(range(12)))
    assert any(t.finish_reason == "eos" and t.tail_ids for t in trajs)
    assert learner_vs_sampler(model, trajs, pack=LAYOUTS[layout]) <= 1e-4


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_full_attention_learner_logprobs_equal_uncached_sampler(family):
    model = tiny_model(4, family=family)
    trajs = generate(model, prompts_mixed(4), params(max_new_tokens=16, use_cache=False, strategy="dynamic"))
    assert learner_vs_sampler(model, trajs, "full", int(model.config.shift_logits)) <= 1e-4


def brute_force_loss(model, trajs, adv, old) -> torch.Tensor:
    total = torch.zeros(())
    for i, t in enumerate(trajs):
        logp = state_logprobs(model, t, MASK)
        o = torch.tensor([old[(i, j)] for j in range(len(t.response_ids))])
        total = total + ppo_clip(logp, o, torch.full_like(o, adv[i]), 0.2, 0.2)[0].sum()
    return total


def rows_loss(model, trajs, adv, old, pack, budget=64) -> torch.Tensor:
    total = torch.zeros(())
    for mb in micro_batches(rows_for(trajs, pack=pack), budget, PAD):
        lp, _ = token_logprobs(model, mb, MASK)
        o = torch.tensor([old[k] for k in zip(mb.traj_index.tolist(), mb.token_index.tolist())])
        a = torch.tensor([adv[i] for i in mb.traj_index.tolist()])
        total = total + ppo_clip(lp, o, a, 0.2, 0.2)[0].sum()
    return total


def assert_same_loss_and_grads(model, a: torch.Tensor, b: torch.Tensor) -> None:
    grads_a = torch.autograd.grad(a, list(model.parameters()))
    grads_b = torch.autograd.grad(b, list(model.parameters()))
    assert float(a.detach()) == pytest.approx(float(b.detach()), rel=1e-5)
    for ga, gb in zip(grads_a, grads_b):
        assert torch.allclose(ga, gb, rtol=1e-5, atol=1e-6 * float(gb.abs().max()) + 1e-9)


def clipped(strategy: str, steps_per_block: int):
    model = tiny_model(4).train()
    trajs = generate(model, prompts_mixed(4), params(max_new_tokens=16, strategy=strategy,
                                                     steps_per_block=steps_per_block), seeds=[1, 2, 3, 4])
    adv = [1.0, -0.5, 0.25, -1.0]
    # Old log-probs away from the current ones so that some ratios are clipped.
    old = {(i, j): lp + 0.3 * ((i + j) % 3 - 1) for i, t in enumerate(trajs) for j, lp in enumerate(t.logprobs)}
    return model, trajs, adv, old


@pytest.fixture(scope="module")
def clipped_case():
    return clipped("dynamic", 2)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_rows_loss_and_gradient_equal_bruteforce(clipped_case, layout):
    model, trajs, adv, old = clipped_case
    assert_same_loss_and_grads(model, rows_loss(model, trajs, adv, old, LAYOUTS[layout], 1024),
                               brute_force_loss(model, trajs, adv, old))


@pytest.mark.parametrize("budget", [60, 1024])  # 60: the budget splits a trajectory's rounds over rows
def test_packed_rounds_equal_per_round_loss_and_gradient(budget):
    model, trajs, adv, old = clipped("static", 4)  # K = 4 rounds
    packed_rows = rows_for(trajs, pack=budget)
    assert len(packed_rows) < len(rows_for(trajs))
    assert (len(packed_rows) > len(trajs)) == (budget == 60)
    assert_same_loss_and_grads(model, rows_loss(model, trajs, adv, old, budget, budget),
                               rows_loss(model, trajs, adv, old, None))


def handmade(step_map, prompt_len=3, block=4) -> Trajectory:
    n = len(step_map)
    return Trajectory(prompt_ids=list(range(2, 2 + prompt_len)), response_ids=[5] * n, step_map=step_map,
                      logprobs=[0.0] * n, entropies=[0.0] * n, block_size=block, finish_reason="length",
                      num_forwards=max(step_map))


def test_shrink_semantics_on_handwritten_step_maps():
    assert shrink_groups([3, 1, 2, 2, 5, 4], 1) == [[1], [2], [3], [4], [5]]
    assert shrink_groups([3, 1, 2, 2, 5, 4], 2) == [[1, 2], [3, 4], [5]]
    assert shrink_groups([7, 7, 8], 4) == [[7, 8]]
    # Prompt of 3 with B = 4: block 0 holds one response slot, block 1 four, block 2 two.
    t = handmade([1, 2, 3, 2, 4, 5, 5])
    groups = block_step_groups(Sequence.of(t, MASK), 4, 1)
    assert groups == {0: [[1]], 1: [[2], [3], [4]], 2: [[5]]}
    assert block_step_groups(Sequence.of(t, MASK), 4, 2) == {0: [[1]], 1: [[2, 3], [4]], 2: [[5]]}


@pytest.mark.parametrize("shrink", [1, 2, 3])
def test_rows_per_response_is_max_groups_over_blocks(shrink):
    t = handmade([1, 2, 3, 2, 4, 5, 6, 7, 8, 9, 9, 10], prompt_len=4)
    groups = block_step_groups(Sequence.of(t, MASK), 4, shrink)
    rows = trace_rows(t, 0, "block_causal", shrink, MASK)
    assert len(rows) == max(len(g) for g in groups.values())
    # Each row masks exactly the tokens whose step is at or after its group's first step.
    trained = sorted(j for r in rows for j in r.token_index.tolist())
    assert trained == list(range(len(t.response_ids)))
    for r in rows:
        for slot, pos in enumerate(r.position_ids.tolist()):
            if r.noisy[slot] and pos >= 4:
                b = pos // 4
                if r.round_index < len(groups[b]):
                    first = groups[b][r.round_index][0]
                    assert bool(r.input_ids[slot] == MASK) == (t.step_map[pos - 4] >= first)
