"""Block-causal attention (SDAR/tiny): a position sees its own block and earlier ones, never later ones."""
import torch

from dense_masks import column_mask
from models import load_model, write_tiny_checkpoint

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
