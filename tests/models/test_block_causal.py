"""Block-causal attention (SDAR/tiny): a position sees its own block and earlier ones, never later ones."""
import torch
import torch.nn.functional as F

from dense_masks import column_mask
from models import load_model, write_tiny_checkpoint
from models.decode_masks import KeyEnd

BLOCK, BLOCKS = 4, 4


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    n, t = ids.shape
    cols = torch.arange(t)
    mask = column_mask(cols, cols, torch.ones(n, t, dtype=torch.bool), BLOCK)
    with torch.no_grad():
        return model(ids, cols.expand(n, t), mask)


def test_logits_depend_on_own_and_earlier_blocks_only(tmp_path):
    model = load_model(write_tiny_checkpoint(tmp_path, block_size=BLOCK))
    assert model.config.attention == "block_causal" and model.config.block_size == BLOCK
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(7, model.config.vocab_size, (1, BLOCK * BLOCKS), generator=gen)
    base = _logits(model, ids)
    b = 1
    own = slice(b * BLOCK, (b + 1) * BLOCK)

    later = ids.clone()
    later[0, (b + 1) * BLOCK:] = torch.randint(7, model.config.vocab_size, ((BLOCKS - b - 1) * BLOCK,), generator=gen)
    assert torch.allclose(_logits(model, later)[0, :(b + 1) * BLOCK], base[0, :(b + 1) * BLOCK], atol=1e-6, rtol=0)

    for changed in (b * BLOCK + 3, b * BLOCK - 1):  # a later slot of the same block; the previous block
        edited = ids.clone()
        edited[0, changed] = 7 if ids[0, changed] != 7 else 8
        diff = (_logits(model, edited)[0, own] - base[0, own]).abs().amax(-1)
        assert (diff > 1e-4).all(), (changed, diff)


def test_key_end_masks_built_once_equal_the_dense_mask():
    """A decode pass's KeyEnd (its key count given: masks built once for every layer) against SDPA
    over the dense [rows, Tq, Tk] mask, with grouped query heads, one and two query segments."""
    gen = torch.Generator().manual_seed(3)
    rows, heads, kv_heads, tk, d, seg = 3, 4, 2, 20, 8, 4
    k, v = torch.randn(2, rows, kv_heads, tk, d, generator=gen)
    for ends in ((torch.tensor([12, 16, 20]),), (torch.tensor([8, 12, 16]), torch.tensor([12, 16, 20]))):
        q = torch.randn(rows, heads, seg * len(ends), d, generator=gen)
        spec = KeyEnd(ends, seg, tk)
        end_of_query = torch.stack([e for e in ends for _ in range(seg)], dim=1)  # [rows, Tq]
        dense = torch.arange(tk)[None, None] < end_of_query[..., None]
        ref = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1),
                                             attn_mask=dense[:, None])
        torch.testing.assert_close(spec.attend(q, k, v, True), ref, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(spec.attend(q, k, v, True), KeyEnd(ends, seg).attend(q, k, v, True), rtol=0, atol=0)


def test_a_decode_pass_mask_grouped_once_equals_the_mask_built_per_call():
    """The engine's KeyEnd (key count, dtype and head groups given: one additive mask, already repeated
    per query head of a K/V group) attends exactly as one built in the call, for one and two segments."""
    gen = torch.Generator().manual_seed(4)
    rows, heads, kv_heads, tk, d, seg = 3, 6, 2, 20, 8, 4
    k, v = torch.randn(2, rows, kv_heads, tk, d, generator=gen)
    for ends in ((torch.tensor([12, 16, 20]),), (torch.tensor([8, 12, 16]), torch.tensor([12, 16, 20]))):
        q = torch.randn(rows, heads, seg * len(ends), d, generator=gen)
        built = KeyEnd(ends, seg, tk, torch.float32, heads // kv_heads)
        assert built.valid.shape == (rows, 1, 1 if len(ends) == 1 else 3 * seg * len(ends), tk)
        torch.testing.assert_close(built.attend(q, k, v, True), KeyEnd(ends, seg).attend(q, k, v, True), rtol=0, atol=0)
