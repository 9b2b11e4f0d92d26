"""Fused input projections: a layer's q/k/v (and gate/up) as one matmul, with the parameters untouched.

The parameters keep their own names and shapes (checkpoints, weight sync, ZeRO-3 and the optimizer
see the usual model); `fuse_projections` only moves their values into one buffer per group, each
parameter a row block of it (memory-neutral). Whether a group is fused is read from that layout on
every call (`fused_weight`), never remembered: anything that gives a parameter its own storage again
(`to_empty`, `.to(...)`, `load_state_dict(assign=True)`) falls back to separate matmuls, exact and
only slower, until the next `fuse_projections` (the sampler calls it at every generate() on a GPU;
on a CPU the separate matmuls measured faster at decode row counts, README). In-place
writes (a weight sync's `copy_`) keep the layout.

On a CPU the fused fp32 matmul equals the separate ones bitwise (tests/models/test_fused.py), so the
learner's separate matmuls and the sampler's fused one give the same log-probs.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _groups(model: nn.Module) -> list[tuple[nn.Linear, ...]]:
    groups: list[tuple[nn.Linear, ...]] = []
    for layer in getattr(model, "layers", ()):
        attn, mlp = layer.self_attn, layer.mlp
        groups += [(attn.q_proj, attn.k_proj, attn.v_proj), (mlp.gate_proj, mlp.up_proj)]
    return groups


def _consecutive(tensors: Sequence[torch.Tensor]) -> bool:
    """True when the tensors (parameters of one model: same dtype) lie back to back from the first
    one's address, inside its storage (then they are views of it: two live allocations never overlap)."""
    first = tensors[0]
    end = first.data_ptr()
    for t in tensors:
        if t.data_ptr() != end or t.nbytes == 0:  # empty: e.g. a ZeRO-3 partition not yet gathered
            return False
        end += t.nbytes
    storage = first.untyped_storage()
    return first.is_contiguous() and end <= storage.data_ptr() + storage.nbytes()


def _block(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The [sum of rows, ...] tensor the consecutive `tensors` form (called where no gradient flows)."""
    first = tensors[0]
    return first.as_strided((sum(t.shape[0] for t in tensors), *first.shape[1:]), first.stride())


def fused_weight(linears: Sequence[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The group's weight (and bias) as one [sum of outputs, in] matrix when its parameters are
    consecutive in one buffer and no gradient is asked for (the fused view has no autograd path to
    the parameters); None otherwise. Traced by torch.compile as separate matmuls (it cannot follow
    storage pointers)."""
    weights = [lin.weight for lin in linears]
    if torch.compiler.is_compiling() or (torch.is_grad_enabled() and weights[0].requires_grad):
        return None
    if not _consecutive(weights):
        return None
    biases = [lin.bias for lin in linears]
    if biases[0] is None:
        return _block(weights), None
    return (_block(weights), _block(biases)) if _consecutive(biases) else None


def project(x: torch.Tensor, linears: Sequence[nn.Linear]) -> list[torch.Tensor]:
    """Each linear applied to x: one matmul split by outputs where the group is fused, else one each."""
    fused = fused_weight(linears)
    if fused is None:
        return [lin(x) for lin in linears]
    return list(F.linear(x, *fused).split([lin.out_features for lin in linears], dim=-1))


def _fuse(tensors: Sequence[torch.Tensor]) -> None:
    if _consecutive(tensors):
        return
    buffer = torch.cat([t.detach() for t in tensors])
    start = 0
    for t in tensors:
        t.data = buffer[start:start + t.shape[0]]
        start += t.shape[0]


@torch.no_grad()
def fuse_projections(model: nn.Module) -> None:
    """Put each layer's q/k/v and gate/up parameters into one buffer per group (values unchanged,
    Parameter objects kept); groups already fused are left alone."""
    for linears in _groups(model):
        _fuse([lin.weight for lin in linears])
        if linears[0].bias is not None:
            _fuse([lin.bias for lin in linears])


def is_fused(model: nn.Module) -> bool:
    """Whether every q/k/v and gate/up group runs as one matmul in a no-grad forward."""
    with torch.no_grad():
        return all(fused_weight(g) is not None for g in _groups(model))
