"""Counter-based uniforms: u = f(row seed, absolute position, step, stream).

A sequence's random draws depend only on its own seed and where/when they are drawn, never on
batch composition, cache use or which worker ran it: cached and uncached sampling, batched and
single-row runs, and any sharding of prompts over rollout workers all sample the same tokens.
"""
from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF
SEED_LIMIT = _M32 + 1  # row seeds are 32-bit: `uniforms` hashes a seed's low 32 bits only


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """Chris Wellons' lowbias32 integer hash on int64 tensors holding 32-bit values."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32  # the product may wrap int64; the low 32 bits stay exact
    return x ^ (x >> 16)


def row_seed(seed: int, prompt_uid: str, sample_idx: int) -> int:
    """A stable 32-bit seed per (run seed, prompt, sample) that does not depend on Python's hash."""
    h = seed & _M32
    for ch in f"{prompt_uid}\x00{sample_idx}".encode():
        h = int(_mix32(torch.tensor(h ^ ch)))
    return h


def uniforms(seeds: torch.Tensor, positions: torch.Tensor, steps: torch.Tensor, stream: int) -> torch.Tensor:
    """float64 uniforms in [0, 1) with 53 random bits; all arguments broadcast together."""
    base = _mix32(seeds ^ _mix32(positions * 4 + stream)) ^ _mix32(steps + 0x9E3779B9)
    hi, lo = _mix32(torch.stack([base, base ^ 0x5BD1E995]))  # one hash over both halves: half the kernels
    return ((hi >> 5).double() * 67108864.0 + (lo >> 6).double()) / 9007199254740992.0
