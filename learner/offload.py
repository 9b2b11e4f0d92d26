"""A training engine's device state parked in host memory while a colocated rollout worker decodes.

With `cluster.colocate` a learner rank and a rollout worker share one GPU. The learner's fp32
master weights, gradients and AdamW moments (16 bytes per parameter: ~64 GB for a 4B model) would
leave the sampler nothing, so between updates they live in host memory and come back for the next
update, as verl and OpenRLHF do. Every Parameter object stays the same one (the optimizer, DDP and
autograd hold them): only its storage is swapped for an empty placeholder and back.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class HostCopy:
    """Where each offloaded tensor went: parameter data, gradients and optimizer-state entries."""
    params: list[tuple[nn.Parameter, torch.Tensor]] = field(default_factory=list)
    grads: list[tuple[nn.Parameter, torch.Tensor]] = field(default_factory=list)
    states: list[tuple[dict, str, torch.Tensor]] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for part in (self.params, self.grads, self.states) for *_, t in part)


def _to_host(t: torch.Tensor, pin: bool) -> torch.Tensor:
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=pin)
    return host.copy_(t, non_blocking=pin)


def offload(module: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> HostCopy:
    """Copy every parameter, gradient and optimizer-state tensor that lives on `device` to host
    memory (pinned when `device` is a GPU) and leave an empty placeholder on `device`, so its
    memory can be released. Tensors elsewhere (AdamW's step counters live on the CPU) stay."""
    pin = device.type == "cuda"
    out = HostCopy()
    with torch.no_grad():
        for p in module.parameters():  # a tied weight is listed once
            if p.device == device:
                out.params.append((p, _to_host(p.data, pin)))
            if p.grad is not None and p.grad.device == device:
                out.grads.append((p, _to_host(p.grad, pin)))
        for state in optimizer.state.values():
            for key, value in state.items():
                if torch.is_tensor(value) and value.device == device:
                    out.states.append((state, key, _to_host(value, pin)))
        if pin:
            torch.cuda.current_stream(device).synchronize()  # the copies are done before storage goes
        empty = torch.empty(0, device=device)
        for p, _ in out.params:
            p.data = empty.to(p.dtype)
        for p, _ in out.grads:
            p.grad = None
        for state, key, _ in out.states:
            state[key] = empty.to(state[key].dtype)
    return out


def reload(copy: HostCopy, device: torch.device) -> None:
    """Put everything `offload` moved back on `device`, into the same Parameter objects and
    optimizer-state entries."""
    with torch.no_grad():
        for p, host in copy.params:
            p.data = host.to(device, non_blocking=True)
        for p, host in copy.grads:
            p.grad = host.to(device, non_blocking=True)
        for state, key, host in copy.states:
            state[key] = host.to(device, non_blocking=True)
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()  # host buffers may be freed after this
