"""Dense boolean attention masks (True = may attend) over canvas columns: the tests' reference for
the structured masks the sampler and the learner use (models/decode_masks.py, models/slot_mask.py)."""
from __future__ import annotations

import torch


def column_mask(q_cols: torch.Tensor, k_cols: torch.Tensor, key_valid: torch.Tensor,
                block_size: int | None) -> torch.Tensor:
    """[R, Tq, Tk] mask over canvas columns.

    block_size: block-causal (a column sees every column of its own and earlier blocks);
    None: full bidirectional attention. key_valid [R, Tk] hides padding. Every query may see
    itself, so padding queries get a finite (ignored) output instead of NaN, which would
    otherwise leak through 0 * NaN into the values other queries read.
    """
    same = k_cols[None, :] == q_cols[:, None]
    if block_size is None:
        allowed = torch.ones_like(same)
    else:
        allowed = (k_cols[None, :] // block_size) <= (q_cols[:, None] // block_size)
    return (allowed[None] & key_valid[:, None, :]) | same[None]
