"""Continuous batching, host synchronisations and mask shapes of the slot decoder."""

import contextlib

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from test_sampler import assert_same

from helpers import STRATEGIES, params, tiny_model
from rollout.decode_forward import DecodeForward
from rollout.sampler import generate

SYNC_METHODS = (
    "item",
    "tolist",
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
    "nonzero",
    "cpu",
    "numpy",
    "masked_select",
)


def prompts_varied(n: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(5)
    return [torch.randint(2, 10, (1 + (7 * i) % 13,), generator=g).tolist() for i in range(n)]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_continuous_batching_equals_decoding_each_prompt_alone(strategy):
    model = tiny_model(4, sharpen=4.0)  # rows stop at EOS in different blocks
    prompts, seeds = prompts_varied(7), list(range(20, 27))
    p = params(strategy=strategy, max_new_tokens=20, max_batch_rows=3)
    batched = generate(model, prompts, p, seeds)
    alone = [generate(model, [x], p, [s])[0] for x, s in zip(prompts, seeds)]
    assert_same(batched, alone)
    # The fixture must exercise slot reuse with rows that end in different blocks.
    lengths = {len(t.prompt_ids) + len(t.response_ids) + len(t.tail_ids) for t in batched}
    assert len({t.num_forwards for t in batched}) > 1 and len(lengths) > 1
    assert any(t.finish_reason == "eos" for t in batched) and any(t.finish_reason == "length" for t in batched)


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_full_attention_continuous_batching_equals_alone(family):
    model = tiny_model(4, family=family)
    prompts, seeds = prompts_varied(5), list(range(5))
    for cache in (True, False):
        p = params(strategy="dynamic", max_new_tokens=12, max_batch_rows=2, use_cache=cache)
        assert_same(
            generate(model, prompts, p, seeds), [generate(model, [x], p, [s])[0] for x, s in zip(prompts, seeds)]
        )


@contextlib.contextmanager
def count_host_syncs():
    """Counts every Python-level call that reads a tensor on the host (or indexes with a boolean
    mask, a hidden nonzero) while active."""
    calls: list[str] = []
    saved = {}

    def wrap(owner, name):
        fn = getattr(owner, name)
        saved[(owner, name)] = fn

        def counted(*a, **kw):
            calls.append(name)
            return fn(*a, **kw)

        setattr(owner, name, counted)

    def wrap_index(name):
        fn = getattr(torch.Tensor, name)
        saved[(torch.Tensor, name)] = fn

        def checked(self, idx, *rest):
            parts = idx if isinstance(idx, tuple) else (idx,)
            if any(isinstance(x, torch.Tensor) and x.dtype == torch.bool for x in parts):
                calls.append(f"{name}[bool]")
            return fn(self, idx, *rest)

        setattr(torch.Tensor, name, checked)

    for name in SYNC_METHODS:
        wrap(torch.Tensor, name)
    for name in ("nonzero", "masked_select", "unique", "repeat_interleave"):
        wrap(torch, name)
    wrap_index("__getitem__")
    wrap_index("__setitem__")
    try:
        yield calls
    finally:
        for (owner, name), fn in saved.items():
            setattr(owner, name, fn)


@pytest.mark.parametrize("strategy", ["static", "dynamic"])
def test_host_syncs_per_pass(strategy):
    model = tiny_model(4)
    prompts = prompts_varied(6)
    stats: dict = {}
    p = params(strategy=strategy, steps_per_block=4, max_new_tokens=16, max_batch_rows=4)
    with count_host_syncs() as calls:
        trajs = generate(model, prompts, p, stats=stats)
    assert len(trajs) == 6
    # Every host read happened through the HostLink, which counted it.
    assert len(calls) == stats["host_syncs"] + stats["host_reads"], calls
    if strategy == "static":  # the schedule is known: one status read per block, none per pass
        assert stats["host_syncs"] * 2 <= stats["passes"]
    else:
        assert stats["host_syncs"] <= stats["passes"]


@pytest.mark.parametrize("fixed_shapes", [False, True])
def test_no_rows_by_queries_by_keys_mask_is_built(fixed_shapes):
    masks = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        masks.append((q.shape[0], q.shape[2], k.shape[2], None if attn_mask is None else tuple(attn_mask.shape)))
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)

    F.scaled_dot_product_attention = spy
    first_pass_queries = []  # a first pass's [finished | current] block queries, per K/V head
    try:
        for family in ("tiny", "llada"):
            model = tiny_model(4, family=family)
            cfg = model.config
            first_pass_queries.append(2 * 4 * cfg.num_heads // cfg.num_kv_heads)
            generate(model, prompts_varied(5), params(max_new_tokens=12, max_batch_rows=3),
                     forward=DecodeForward(fixed_shapes=fixed_shapes))
    finally:
        F.scaled_dot_product_attention = sdpa
    assert masks
    for rows, tq, tk, shape in masks:
        assert shape is not None and len(shape) == 4 and shape[1] == 1
        # One [1, 1, Tq, Tk] mask shared by the rows, per-row key validity [rows, 1, 1, Tk], or per-row
        # masks over a first pass's two blocks of queries (its two key ends): never a canvas of queries.
        assert shape[0] == 1 or shape[2] == 1 or shape[2] == tq <= max(first_pass_queries), (rows, tq, tk, shape)
    assert any(shape[0] > 1 and shape[2] > 1 for *_, shape in masks)  # the two-segment pass ran


@pytest.mark.parametrize(
    "update, message",
    [
        (dict(max_batch_rows=0), "max_batch_rows"),
        (dict(cache_tokens=20), "rollout.cache_tokens=20 cannot hold"),
    ],
)
def test_bad_engine_params_are_named(update, message):
    with pytest.raises(ValidationError, match=message):
        params(**update)


@pytest.mark.parametrize(
    "prompt, message",
    [
        ([2] * 40, "prompt 0 has 40 tokens, more than the KV cache holds per row \\(rollout.cache_tokens=32\\)"),
        ([2] * 13, "needs a canvas of 40 columns, more than rollout.cache_tokens=32"),
    ],
)
def test_prompts_that_do_not_fit_the_cache_are_named(prompt, message):
    with pytest.raises(ValueError, match=message):
        generate(tiny_model(4), [prompt], params(max_new_tokens=24, cache_tokens=32))


def test_finished_slots_stop_riding_along_once_the_queue_is_empty():
    model = tiny_model(4, sharpen=4.0)
    prompts, seeds = prompts_varied(7), list(range(20, 27))
    p = params(strategy="static", max_new_tokens=20, max_batch_rows=7)  # every prompt admitted at once
    rows_per_pass: list[int] = []
    hook = model.embed_tokens.register_forward_hook(lambda mod, args, out: rows_per_pass.append(args[0].shape[0]))
    try:
        batched = generate(model, prompts, p, seeds)
    finally:
        hook.remove()
    assert_same(batched, [generate(model, [x], p, [s])[0] for x, s in zip(prompts, seeds)])
    # Blocks each row decoded; the last pass runs exactly the rows that reached the most.
    blocks = [(len(t.prompt_ids) + len(t.response_ids) + len(t.tail_ids) - len(t.prompt_ids) // 4 * 4) // 4
              for t in batched]
    assert len(set(blocks)) > 1
    assert rows_per_pass[-1] == blocks.count(max(blocks))
