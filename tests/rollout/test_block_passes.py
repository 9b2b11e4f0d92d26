"""bench/block_passes.py: passes per block read from the step map; on the real sampler's dynamic
decodes they add up to the sampler's own forward count (Trajectory.num_forwards)."""
import pytest

from bench.block_passes import figures, passes_per_block
from helpers import params, prompts_mixed, tiny_model
from rollout.sampler import generate
from rollout.trajectory import Trajectory


def test_figures_of_a_handmade_trajectory():
    # Prompt of 6 at B = 4: the response starts at column 6, inside the prompt's second block.
    t = Trajectory(prompt_ids=[5] * 6, response_ids=[3, 4, 5, 6, 1], step_map=[1, 1, 2, 3, 3],
                   logprobs=[0.0] * 5, entropies=[0.0] * 5, block_size=4, finish_reason="eos", num_forwards=3,
                   tail_ids=[7], tail_steps=[3])
    assert passes_per_block(t) == [1, 2]
    assert figures([t, t], [True, False]) == {"accuracy": 0.5, "tokens": 5.0, "forwards": 3.0,
                                              "tokens_per_forward": 1.667, "blocks": 2.0,
                                              "passes_per_block": 1.5, "tail": 1.0}


@pytest.mark.parametrize("block", [4, 8])
def test_block_passes_add_up_to_the_samplers_forwards(block):
    sampling = params(block_size=block, steps_per_block=block, strategy="dynamic", temperature=0.0, threshold=0.95)
    trajs = generate(tiny_model(block_size=block), prompts_mixed(block), sampling)
    blocks = [passes_per_block(t) for t in trajs]
    assert [sum(b) for b in blocks] == [t.num_forwards for t in trajs]
    # Some block took one pass for several tokens, some took several: both cases are counted.
    assert min(min(b) for b in blocks) == 1 and max(max(b) for b in blocks) > 1
    assert max(t.tokens_per_forward for t in trajs) > 1
