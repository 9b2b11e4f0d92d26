"""The block-diffusion sampler against its own uncached reference and a brute-force replay."""
import pytest
import torch

from helpers import EOS, MASK, STRATEGIES, params, prompts_mixed, tiny_model
from rollout.params import SamplingParams
from rollout.sampler import generate
from tests.learner.bruteforce import state_logprobs


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.response_ids == y.response_ids
        assert x.step_map == y.step_map
        assert x.tail_ids == y.tail_ids and x.tail_steps == y.tail_steps
        assert x.finish_reason == y.finish_reason and x.num_forwards == y.num_forwards
        assert torch.allclose(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-5)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("block", [2, 4])
def test_cached_equals_uncached(strategy, block):
    model = tiny_model(block)
    p = params(strategy=strategy, block_size=block, steps_per_block=2)
    cached = generate(model, prompts_mixed(block), p)
    uncached = generate(model, prompts_mixed(block), p.model_copy(update={"use_cache": False}))
    assert_same(cached, uncached)


def test_eos_inside_a_block_is_covered_and_cut():
    model = tiny_model(4)
    trajs = generate(model, prompts_mixed(4) * 3, params(max_new_tokens=40),
                     seeds=list(range(12)))
    inside = [t for t in trajs if t.finish_reason == "eos" and t.tail_ids]
    assert inside, "the fixture must produce an EOS that is not the last slot of its block"
    for t in trajs:
        if t.finish_reason == "eos":
            assert t.response_ids[-1] == EOS and EOS not in t.response_ids[:-1]
            # The response ends inside its last block; the tail fills that block up.
            assert (len(t.prompt_ids) + len(t.response_ids) + len(t.tail_ids)) % 4 == 0
        else:
            assert t.finish_reason == "length" and len(t.response_ids) == 40


def test_row_results_do_not_depend_on_the_batch():
    model = tiny_model(4)
    prompts = prompts_mixed(4)
    seeds = [7, 8, 9, 10]
    batch = generate(model, prompts, params(strategy="dynamic"), seeds=seeds)
    alone = [generate(model, [p], params(strategy="dynamic"), seeds=[s])[0] for p, s in zip(prompts, seeds)]
    assert_same(batch, alone)


@pytest.mark.parametrize("strategy", ["static", "dynamic"])
def test_recorded_logprobs_equal_uncached_forward_at_commit_state(strategy):
    model = tiny_model(4)
    trajs = generate(model, prompts_mixed(4), params(strategy=strategy, temperature=1.0))
    for t in trajs:
        with torch.no_grad():  # the naive reference: one uncached forward per commit state
            replayed = state_logprobs(model, t, MASK)
        for j in range(len(t.response_ids)):
            assert abs(float(replayed[j]) - t.logprobs[j]) < 1e-5


def test_static_commits_exactly_n_k_per_pass_and_prompt_is_untouched():
    model = tiny_model(8)
    prompts = [list(range(2, 10)), list(range(2, 10))[::-1]]  # multiples of B: every block has B masks
    for steps in (1, 2, 4, 8):
        trajs = generate(model, prompts, params(block_size=8, steps_per_block=steps, max_new_tokens=32))
        for t in trajs:
            all_steps = t.step_map + t.tail_steps
            counts = torch.bincount(torch.tensor(all_steps))[1:]
            assert set(counts.tolist()) == {8 // steps}
            assert t.num_forwards == len(all_steps) // (8 // steps)
            assert t.tokens_per_forward == pytest.approx(8 / steps) or t.finish_reason == "eos"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_step_maps_increase_across_blocks(strategy):
    model = tiny_model(4)
    for t in generate(model, prompts_mixed(4), params(strategy=strategy)):
        offset = len(t.prompt_ids)
        steps = t.step_map + t.tail_steps
        blocks = {}
        for j, s in enumerate(steps):
            blocks.setdefault((offset + j) // 4, []).append(s)
        ordered = [blocks[b] for b in sorted(blocks)]
        for earlier, later in zip(ordered, ordered[1:]):
            assert max(earlier) < min(later)
        assert min(steps) == 1
        assert t.num_forwards == max(steps)


def test_greedy_is_deterministic_and_ignores_seed():
    model = tiny_model(4)
    a = generate(model, prompts_mixed(4), params(temperature=0.0, seed=1))
    b = generate(model, prompts_mixed(4), params(temperature=0.0, seed=2))
    assert [t.response_ids for t in a] == [t.response_ids for t in b]


def test_full_attention_families_sample_with_and_without_prefix_cache():
    for family in ("llada", "dream"):
        model = tiny_model(4, family=family)
        p = params(max_new_tokens=16, strategy="static")
        exact = generate(model, prompts_mixed(4), p.model_copy(update={"use_cache": False}))
        approx = generate(model, prompts_mixed(4), p)
        for t in exact + approx:
            assert t.canvas_len == 16
            assert all(s >= 1 for s in t.step_map)
        # The first block's first pass sees the same (empty) cache in both modes.
        assert [t.response_ids[:1] for t in exact] == [t.response_ids[:1] for t in approx]


@pytest.mark.parametrize("bad, message", [
    (dict(prompts=[[]]), "prompt 0 is empty"),
    (dict(prompts=[[2] * 300]), "exceeds the model context"),
    (dict(prompts=[[2, MASK]]), "mask token"),
    (dict(family="llada", max_new_tokens=10), "must divide max_new_tokens"),
])
def test_bad_input_is_named(bad, message):
    model = tiny_model(4, family=bad.get("family", "tiny"))
    with pytest.raises(ValueError, match=message):
        generate(model, bad.get("prompts", [[2, 3]]), params(max_new_tokens=bad.get("max_new_tokens", 8)))


def test_bad_params_are_named():
    with pytest.raises(ValueError, match="steps_per_block"):
        SamplingParams(block_size=2, steps_per_block=4)
    with pytest.raises(ValueError, match="strategy"):
        SamplingParams(strategy="greedy")
