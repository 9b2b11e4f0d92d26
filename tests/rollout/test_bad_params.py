"""Bad generate() input and sampling parameters fail before any work, naming what is wrong."""
import pytest

from helpers import params, tiny_model
from rollout.sampler import generate


@pytest.fixture(scope="module")
def model():
    return tiny_model(4)


@pytest.mark.parametrize("prompt", [[2, -1], [-5, 3]])
def test_negative_prompt_ids_are_named(model, prompt):
    with pytest.raises(ValueError, match=r"prompt 0 has id -\d+: token ids must be >= 0"):
        generate(model, [prompt], params(max_new_tokens=8))
