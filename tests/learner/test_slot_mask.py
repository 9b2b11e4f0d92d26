"""The per-slot mask description equals the dense masks it replaces, and attending through it
(query chunks over the keys each chunk may see, recomputed in backward) equals dense attention."""

import pytest
import torch
import torch.nn.functional as F

from dense_masks import column_mask
from models.slot_mask import SlotMask
from tests.learner.python_rows import row_mask


def random_rows(gen: torch.Generator, R: int, T: int, copies: int):
    copy = torch.randint(0, copies + 1, (R, T), generator=gen)
    block = torch.randint(0, 5, (R, T), generator=gen)
    lengths = torch.randint(1, T + 1, (R,), generator=gen)
    valid = torch.arange(T)[None] < lengths[:, None]
    return copy, block, valid


@pytest.mark.parametrize("seed", range(5))
def test_description_equals_dense_row_mask_on_random_rows(seed):
    gen = torch.Generator().manual_seed(seed)
    copy, block, valid = random_rows(gen, 3, 37, 1)  # one noisy copy id: the per-round layout
    spec = SlotMask(copy, block, valid)
    dense = row_mask(copy > 0, block, valid)
    assert torch.equal(spec.rows(), dense)
    assert torch.equal(spec.rows(5, 19), dense[:, 5:19])


def test_flat_layouts_equal_the_sampler_column_masks():
    T, B = 23, 4
    pos = torch.arange(T)[None]
    valid = pos < 19
    full = SlotMask(torch.ones_like(pos), torch.zeros_like(pos), valid)  # LLaDA/Dream rows
    causal = SlotMask(torch.zeros_like(pos), pos // B, valid)  # block-causal baselines
    assert torch.equal(full.rows(), column_mask(pos[0], pos[0], valid, None))
    assert torch.equal(causal.rows(), column_mask(pos[0], pos[0], valid, B))


def test_copies_of_one_block_never_see_each_other():
    # clean blocks 0,1 | copy 1 of block 1 | copy 2 of block 1
    copy = torch.tensor([[0, 0, 0, 0, 1, 1, 2, 2]])
    block = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1]])
    m = SlotMask(copy, block, torch.ones_like(copy, dtype=torch.bool)).rows()[0]
    assert m[4].tolist() == [True, True, False, False, True, True, False, False]
    assert m[7].tolist() == [True, True, False, False, False, False, True, True]
    assert m[3].tolist() == [True, True, True, True, False, False, False, False]


@pytest.mark.parametrize("chunk", [4, 7, 64])
def test_chunked_attention_and_gradients_equal_dense_attention(chunk):
    gen = torch.Generator().manual_seed(chunk)
    R, H, Hkv, T, D = 3, 4, 2, 29, 8
    copy, block, valid = random_rows(gen, R, T, 3)
    block = block.sort(dim=1).values  # keys of later blocks exist, so chunks can skip some
    spec = SlotMask(copy, block, valid, query_chunk=chunk)
    q, k, v = (torch.randn(R, h, T, D, generator=gen, dtype=torch.float64, requires_grad=True) for h in (H, Hkv, Hkv))
    ours = spec.attend(q, k, v, enable_gqa=True)
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=spec.rows()[:, None], enable_gqa=True)
    assert torch.allclose(ours, dense, atol=1e-12)
    w = torch.randn(ours.shape, generator=gen, dtype=torch.float64)
    for a, b in zip(
        torch.autograd.grad((ours * w).sum(), (q, k, v)), torch.autograd.grad((dense * w).sum(), (q, k, v))
    ):
        assert torch.allclose(a, b, atol=1e-12)


def test_chunked_backward_recomputes_under_the_forwards_autocast():
    """bf16 autocast over fp32 weights: q/k leave their fp32 RMS norms in fp32 while v comes out of
    an autocast matmul in bf16; only autocast makes them one dtype, also when backward recomputes."""
    gen = torch.Generator().manual_seed(0)
    R, H, T, D = 2, 2, 40, 8
    copy, block, valid = random_rows(gen, R, T, 3)
    spec = SlotMask(copy, block.sort(dim=1).values, valid, query_chunk=8)
    q, k = (torch.randn(R, H, T, D, generator=gen, requires_grad=True) for _ in range(2))
    v = torch.randn(R, H, T, D, generator=gen).bfloat16().requires_grad_()
    grads = []
    for attend in (spec.attend, lambda q, k, v, enable_gqa: F.scaled_dot_product_attention(
            q, k, v, attn_mask=spec.rows()[:, None], enable_gqa=enable_gqa)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = attend(q, k, v, enable_gqa=False)
        grads.append(torch.autograd.grad(out.float().sum(), (q, k, v)))
    for ours, dense in zip(*grads):
        assert ours.dtype == dense.dtype
        torch.testing.assert_close(ours, dense, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("seed", range(4))
def test_keys_of_a_chunk_are_those_some_query_sees(seed):
    gen = torch.Generator().manual_seed(seed)
    copy, block, valid = random_rows(gen, 3, 41, 3)
    spec = SlotMask(copy, block, valid)
    for start, end in ((0, 41), (0, 7), (5, 19), (30, 41)):
        want = spec.rows(start, end).any(dim=1).any(dim=0).nonzero().squeeze(1)
        assert spec.keys(start, end).tolist() == want.tolist()


def test_query_chunks_start_where_the_first_row_changes_copy():
    # clean 300 | copy 1: 200 | copy 2: 200, chunks of at most 128 queries
    copy = torch.cat([torch.zeros(300), torch.ones(200), torch.full((200,), 2)]).long()[None]
    spec = SlotMask(copy, torch.arange(700)[None] // 4, torch.ones_like(copy, dtype=torch.bool), query_chunk=128)
    starts = [s for s, _ in spec.chunks]
    assert 300 in starts and 500 in starts
    assert all(0 < e - s <= 128 for s, e in spec.chunks) and spec.chunks[-1][1] == 700
    assert all(a[1] == b[0] for a, b in zip(spec.chunks, spec.chunks[1:]))
