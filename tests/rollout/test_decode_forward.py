"""The decode pass's body: fixed shapes (rollout.cuda_graphs), torch.compile (rollout.compile) and the
CUDA-graph compile run on a CPU decode exactly what the eager pass decodes."""

import pytest
import torch
from pydantic import ValidationError
from test_rollout_engine import prompts_varied
from test_sampler import assert_same
from torch._dynamo.utils import counters

from helpers import STRATEGIES, params, tiny_model
from rollout.decode_forward import DecodeForward, graphs_forward, release_graphs
from rollout.sampler import generate


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_fixed_shape_passes_equal_the_eager_engine(strategy):
    """All slots over the whole cache every pass, with slots reused and rows ending in different
    blocks (finished slots ride along) gives what the trimmed passes give."""
    model = tiny_model(4, sharpen=4.0)
    prompts, seeds = prompts_varied(7), list(range(20, 27))
    p = params(strategy=strategy, max_new_tokens=20, max_batch_rows=3)
    assert_same(generate(model, prompts, p, seeds, forward=DecodeForward(fixed_shapes=True)),
                generate(model, prompts, p, seeds))


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_fixed_shape_passes_of_full_attention_equal_the_eager_engine(family):
    model = tiny_model(4, family=family)
    prompts, seeds = prompts_varied(5), list(range(5))
    p = params(strategy="dynamic", max_new_tokens=12, max_batch_rows=2)
    assert_same(generate(model, prompts, p, seeds, forward=DecodeForward(fixed_shapes=True)),
                generate(model, prompts, p, seeds))


def test_fixed_shape_passes_have_one_shape_per_kind():
    shapes = set()
    model = tiny_model(4)

    def body(m, ids, pos, mask, cache):
        shapes.add(tuple(ids.shape))
        return type(m).hidden_states(m, ids, pos, mask, cache)

    generate(model, prompts_varied(6), params(max_new_tokens=16, max_batch_rows=4),
             forward=DecodeForward(body, fixed_shapes=True))
    assert shapes == {(4, 8), (4, 4)}  # first pass of a block (finished block + new one), the others


def test_compiled_and_graph_compiled_decoding_equal_eager():
    """rollout.compile and the CUDA-graph body (compiled with mode="reduce-overhead"; a CPU runs it
    without graphs) give the eager tokens, step maps and forwards; log-probs to 1e-5 like every
    other engine comparison (inductor's fused kernels may round the last bits differently)."""
    torch._dynamo.reset()
    model = tiny_model(4, sharpen=4.0)
    prompts, seeds = prompts_varied(5), list(range(5))
    p = params(strategy="dynamic", max_new_tokens=12, max_batch_rows=3)
    eager = generate(model, prompts, p, seeds)
    assert_same(generate(model, prompts, p.model_copy(update={"compile": True}), seeds), eager)
    assert_same(generate(model, prompts, p, seeds, forward=graphs_forward()), eager)


def test_cuda_graphs_without_cuda_fall_back_to_eager_and_say_so():
    model = tiny_model(4)
    p = params(max_new_tokens=8)
    with pytest.warns(UserWarning, match="rollout.cuda_graphs=true needs a CUDA device"):
        graphs = generate(model, prompts_varied(3), p.model_copy(update={"cuda_graphs": True}))
    assert_same(graphs, generate(model, prompts_varied(3), p))


def test_cuda_graphs_without_cache_is_named():
    with pytest.raises(ValidationError, match="rollout.cuda_graphs=true needs rollout.use_cache=true"):
        params(cuda_graphs=True, use_cache=False)


def test_compiled_shards_of_other_prompt_lengths_share_one_width_and_compile_once():
    """rollout.compile with cache_tokens null: a shard with longer prompts (canvas 60 -> 64 columns)
    reuses the first shard's compiled passes (no recompile) and decodes the eager tokens."""
    torch._dynamo.reset()
    counters.clear()
    model = tiny_model(4, sharpen=4.0)
    p = params(strategy="dynamic", max_new_tokens=20, max_batch_rows=2)
    shards = ([[3] * 37, [4, 5] * 3, [6] * 9], [[5] * 44, [2, 7] * 8, [3, 9]])  # canvases 60 and 64
    for i, prompts in enumerate(shards):
        assert_same(generate(model, prompts, p.model_copy(update={"compile": True})), generate(model, prompts, p))
        if i == 0:
            compiled = counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] == compiled > 0


def test_released_graphs_are_recorded_again_and_decode_the_eager_tokens():
    """release_graphs drops the CUDA-graph body's compiled code with its graphs: the next call
    compiles again (an untouched body would replay through the freed graph trees) and decodes
    what the eager pass decodes."""
    torch._dynamo.reset()
    counters.clear()
    model = tiny_model(4, sharpen=4.0)
    prompts, seeds = prompts_varied(4), list(range(4))
    p = params(strategy="dynamic", max_new_tokens=8, max_batch_rows=2)
    eager = generate(model, prompts, p, seeds)
    assert_same(generate(model, prompts, p, seeds, forward=graphs_forward()), eager)
    compiled = counters["stats"]["unique_graphs"]
    release_graphs()
    assert_same(generate(model, prompts, p, seeds, forward=graphs_forward()), eager)
    assert counters["stats"]["unique_graphs"] == 2 * compiled > 0
