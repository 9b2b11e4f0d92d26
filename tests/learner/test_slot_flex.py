"""The FlexAttention kernel of `SlotMask` (models/slot_flex.py), run on CPU: its block mask covers
exactly the tiles the rule needs, the compiled forward equals dense attention under the rule, and
a run's many (R, T), dtypes and autocast states compile once per dtype, never per size."""

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from models import slot_flex
from models.slot_mask import SlotMask


def layout(gen: torch.Generator, R: int, T: int, copies: int = 3, blocks: int = 40):
    """Random copies over ascending blocks, rows of random length, the last row all padding when R > 1."""
    copy = torch.randint(0, copies + 1, (R, T), generator=gen)
    block = torch.randint(0, blocks, (R, T), generator=gen).sort(dim=1).values
    lengths = torch.randint(1, T + 1, (R,), generator=gen)
    if R > 1:
        lengths[-1] = 0
    return copy, block, torch.arange(T)[None] < lengths[:, None]


def dense_rule(p: slot_flex.FlexPlan) -> torch.Tensor:
    """The plan's mask_mod on the whole padded grid: bool [R', T', T']."""
    i = torch.arange(p.codes.shape[2])
    return slot_flex.mask_mod(p.codes)(torch.arange(p.codes.shape[0])[:, None, None], 0, i[None, :, None],
                                       i[None, None, :])


@pytest.mark.parametrize("R, T, copies", [(3, 200, 3), (1, 77, 1), (2, 300, 0), (4, 385, 5)])
def test_padded_rule_is_the_slot_rule_and_padding_sees_only_itself(R, T, copies):
    spec = SlotMask(*layout(torch.Generator().manual_seed(T), R, T, copies))
    p = slot_flex.plan(spec.q_lim, spec.q_pair, spec.k_lim, spec.k_pair)
    assert (p.rows, p.slots) == (R, T) and p.codes.shape[0] >= 2 and p.codes.shape[2] % 128 == 0
    grid = dense_rule(p)
    assert torch.equal(grid[:R, :T, :T], spec.rows())
    eye = torch.eye(grid.shape[1], dtype=torch.bool)
    pad = torch.ones_like(eye)
    pad[:T, :T] = False
    assert torch.equal(grid[:, pad], eye[pad].expand(grid.shape[0], -1))  # pad slots see only themselves
    assert torch.equal(grid[R:], eye.expand(grid.shape[0] - R, -1, -1))  # so do all slots of pad rows


def tiles(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(some, all) per 128 x 128 tile of a bool [R, T, T] mask."""
    R, T, _ = mask.shape
    t = mask.view(R, T // 128, 128, T // 128, 128).transpose(2, 3)
    return t.any(-1).any(-1), t.all(-1).all(-1)


@pytest.mark.parametrize("seed", range(4))
def test_block_mask_holds_every_visible_tile_and_only_full_ones_as_full(seed):
    gen = torch.Generator().manual_seed(seed)
    spec = SlotMask(*layout(gen, 3, 500, copies=seed, blocks=[1, 5, 40, 300][seed]))
    p = slot_flex.plan(spec.q_lim, spec.q_pair, spec.k_lim, spec.k_pair)
    some, whole = tiles(dense_rule(p))
    partial, full = slot_flex.block_masks(*p.codes.unbind(1))
    assert torch.equal(partial | full, some)  # no visible tile skipped, no empty tile run
    assert not (partial & full).any() and not (full & ~whole).any()  # full only where all is visible
    mask = BlockMask((512, 512), *p.blocks)  # the ordered form the kernel reads says the same
    assert torch.equal(mask.to_dense()[:, 0].bool(), partial | full)


def test_block_mask_marks_full_tiles_of_the_learner_layout():
    # clean 384 slots | copy 1 of blocks 0..2 (128 each): clean tiles below the diagonal and every
    # copy tile over its own block are full, so the kernel skips mask_mod there.
    copy = torch.cat([torch.zeros(384), torch.ones(384)]).long()[None]
    block = (torch.arange(768) % 384 // 128)[None]
    spec = SlotMask(copy, block, torch.ones_like(copy, dtype=torch.bool))
    p = slot_flex.plan(spec.q_lim, spec.q_pair, spec.k_lim, spec.k_pair)
    _, whole = tiles(dense_rule(p))
    partial, full = slot_flex.block_masks(*p.codes.unbind(1))
    assert torch.equal(full[0], whole[0]) and int(full[0].sum()) == 6 + 3 + 3


def test_kernel_names_are_checked():
    copy = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="kernel='triton'.*flex.*chunked"):
        SlotMask(copy, copy, copy == 0, kernel="triton")


CALLS = [  # (R, T, input dtype, bf16 autocast): sizes change every call, R == 1 and T < 128 included
    (3, 200, torch.float32, False), (1, 77, torch.float32, False), (2, 256, torch.float32, False),
    (1, 300, torch.float32, False), (4, 520, torch.float32, False),
    (2, 300, torch.float32, True), (1, 130, torch.bfloat16, False), (3, 513, torch.bfloat16, True),
]


@pytest.fixture(scope="module")
def flex_run():
    """Every call of CALLS through the compiled kernel under no_grad (one compile per dtype, ~25 s
    each here), with the dense-mask SDPA oracle and the graphs compiled."""
    gen = torch.Generator().manual_seed(0)
    graphs = counters["stats"]["unique_graphs"]
    results = []
    for R, T, dtype, autocast in CALLS:
        spec = SlotMask(*layout(gen, R, T), kernel="flex")
        q, k, v = (torch.randn(R, h, T, 16, generator=gen).to(dtype) for h in (4, 2, 2))
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = spec.attend(q, k, v, enable_gqa=True)
        compute = torch.bfloat16 if autocast else dtype  # autocast runs attention in bf16
        oracle = F.scaled_dot_product_attention(*(x.to(compute).double() for x in (q, k, v)),
                                                attn_mask=spec.rows()[:, None], enable_gqa=True)
        results.append((out, oracle, compute))
    return results, counters["stats"]["unique_graphs"] - graphs


@pytest.mark.parametrize("call", range(len(CALLS)))
def test_compiled_flex_equals_dense_attention_under_the_rule(flex_run, call):
    out, oracle, compute = flex_run[0][call]
    assert out.dtype == compute and out.shape == oracle.shape
    assert torch.allclose(out.double(), oracle, atol=1e-5 if compute == torch.float32 else 2e-2)


def test_sizes_and_autocast_states_share_one_compile_per_dtype(flex_run):
    # Without marking sizes dynamic and padding, each new T, R == 1 and the autocast state made its
    # own graph until the recompile limit (then eager flex); with it: fp32 once, bf16 once.
    assert flex_run[1] == 2


def test_past_the_recompile_limit_flex_raises_instead_of_running_eagerly(flex_run):
    # Eager flex would build [R, heads, T, T] scores: a new variant (no GQA) past a limit set to
    # the graphs compiled so far must fail loudly.
    gen = torch.Generator().manual_seed(2)
    spec = SlotMask(*layout(gen, 2, 100), kernel="flex")
    q, k, v = (torch.randn(2, 2, 100, 16, generator=gen) for _ in range(3))
    with torch.no_grad(), torch._dynamo.config.patch(recompile_limit=flex_run[1]):
        with pytest.raises(torch._dynamo.exc.FailOnRecompileLimitHit):
            spec.attend(q, k, v, enable_gqa=False)


def test_cpu_flex_under_grad_runs_the_chunked_kernel(flex_run):
    # torch 2.13 has no FlexAttention backward on CPU: with gradients the CPU path keeps the chunked
    # kernel (and compiles nothing), without them it runs flex.
    gen = torch.Generator().manual_seed(1)
    R, T = 2, 150
    copy, block, valid = layout(gen, R, T)
    q, k, v = (torch.randn(R, h, T, 16, generator=gen, dtype=torch.float64, requires_grad=True) for h in (4, 2, 2))
    graphs = counters["stats"]["unique_graphs"]
    flex = SlotMask(copy, block, valid, query_chunk=64, kernel="flex").attend(q, k, v, enable_gqa=True)
    chunked = SlotMask(copy, block, valid, query_chunk=64, kernel="chunked").attend(q, k, v, enable_gqa=True)
    assert counters["stats"]["unique_graphs"] == graphs
    w = torch.randn(flex.shape, generator=gen, dtype=torch.float64)
    assert torch.equal(flex, chunked)
    grads = (torch.autograd.grad((out * w).sum(), (q, k, v)) for out in (flex, chunked))
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_eager_flex_with_the_plan_block_mask_equals_dense_attention():
    # The block mask and mask_mod straight through (uncompiled) flex_attention, float64: exactness
    # of the rule's tiles without the compiled kernel's float32 rounding.
    gen = torch.Generator().manual_seed(7)
    R, T = 3, 140
    spec = SlotMask(*layout(gen, R, T))
    p = slot_flex.plan(spec.q_lim, spec.q_pair, spec.k_lim, spec.k_pair)
    Rp, Tp = p.codes.shape[0], p.codes.shape[2]
    q, k, v = (torch.randn(Rp, h, Tp, 16, generator=gen, dtype=torch.float64) for h in (4, 2, 2))
    mask = BlockMask((Tp, Tp), *p.blocks, (128, 128), slot_flex.mask_mod(p.codes))
    with pytest.warns(UserWarning):  # flex_attention without torch.compile warns that it is slow
        out = flex_attention(q, k, v, block_mask=mask, enable_gqa=True)
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=dense_rule(p)[:, None], enable_gqa=True)
    assert torch.allclose(out, dense, atol=1e-12)
