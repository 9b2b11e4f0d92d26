"""Bad generate() input and sampling parameters fail before any work, naming what is wrong."""
import pytest
import torch
from pydantic import ValidationError

from helpers import params, tiny_model
from rollout.params import SamplingParams
from rollout.rng import uniforms
from rollout.sampler import default_seeds, generate


@pytest.fixture(scope="module")
def model():
    return tiny_model(4)


@pytest.mark.parametrize("prompt", [[2, -1], [-5, 3]])
def test_negative_prompt_ids_are_named(model, prompt):
    with pytest.raises(ValueError, match=r"prompt 0 has id -\d+: token ids must be >= 0"):
        generate(model, [prompt], params(max_new_tokens=8))


@pytest.mark.parametrize("seeds", [[], [7], [7, 8, 9]])
def test_seed_count_must_match_the_prompts(model, seeds):
    with pytest.raises(ValueError, match=rf"got {len(seeds)} seeds for 2 prompts"):
        generate(model, [[2, 3], [4, 5]], params(max_new_tokens=8), seeds=seeds)


@pytest.mark.parametrize("seed", [-1, 2**32, 2**70, 1.5])
def test_seeds_outside_32_bits_are_named(model, seed):
    with pytest.raises(ValueError, match=r"seeds\[1\]=.*integer in \[0, 2\*\*32\)"):
        generate(model, [[2, 3], [4, 5]], params(max_new_tokens=8), seeds=[0, seed])


def test_default_seeds_stay_32_bit_and_draw_the_same_uniforms():
    p = params(seed=2**60)  # the unmasked seeds overflowed the int64 upload
    seeds = default_seeds(p, 3)
    assert all(0 <= s < 2**32 for s in seeds)
    big = [p.seed * 1000003 % 2**63 + i for i in range(3)]  # same low 32 bits, fits int64
    pos, step = torch.arange(4), torch.ones(4, dtype=torch.long)
    for s, b in zip(seeds, big):
        assert torch.equal(uniforms(torch.tensor(s), pos, step, 0), uniforms(torch.tensor(b), pos, step, 0))


def test_huge_params_seed_decodes(model):
    assert len(generate(model, [[2, 3]], params(max_new_tokens=8, seed=2**60))) == 1


def test_stop_ids_must_be_token_ids(model):
    with pytest.raises(ValidationError, match="stop_token_ids"):
        SamplingParams(stop_token_ids=(-1,))
    for stop in (12, 2**70):  # the tiny model has 12 ids
        with pytest.raises(ValueError, match=r"stop_token_ids \[\d+\] are outside the vocabulary \(size 12\)"):
            generate(model, [[2, 3]], params(max_new_tokens=8, stop_token_ids=(stop,)))


@pytest.mark.parametrize("temperature", [float("inf"), float("nan")])
def test_a_temperature_that_is_not_finite_is_named(temperature):
    # inf would flatten every distribution to uniform: random tokens, not an error
    with pytest.raises(ValidationError, match="temperature"):
        SamplingParams(temperature=temperature)
