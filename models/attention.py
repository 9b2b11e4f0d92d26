"""How a decoder layer attends: a dense boolean mask, no mask, or a mask *description*.

A description (`MaskSpec`) knows the structure of its mask (block ids, key validity, ...) and
picks the kernel itself, so callers never have to build a [rows, Tq, Tk] tensor: the sampler's
decode passes and the learner's packed rows each pass their own spec.
"""
from __future__ import annotations

from typing import Protocol, Union, runtime_checkable

import torch
import torch.nn.functional as F


@runtime_checkable
class MaskSpec(Protocol):
    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, enable_gqa: bool) -> torch.Tensor:
        """Attention output [N, H, Tq, D] for q [N, H, Tq, D] and k/v [N, Hkv, Tk, D]."""
        ...


# bool [N, Tq, Tk] (True = may attend), a description, or None (every query sees every key).
AttnMask = Union[torch.Tensor, MaskSpec, None]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttnMask, enable_gqa: bool) -> torch.Tensor:
    if mask is None or isinstance(mask, torch.Tensor):
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=None if mask is None else mask[:, None], enable_gqa=enable_gqa)
    return mask.attend(q, k, v, enable_gqa)
