"""Plain-torch engine backend: one process, or DDP when a process group of size > 1 exists."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ContextManager

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import distributed
from .engine_config import EngineConfig
from .offload import HostCopy, offload, reload
from .optim import build_optimizer, build_scheduler

STATE_FILE = "engine.pt"


class TorchBackend:
    def __init__(self, model: nn.Module, cfg: EngineConfig, device: torch.device) -> None:
        self.device = device
        self.module = model.to(device)
        self.cfg = cfg
        # DDP broadcasts rank 0's weights here, so all ranks start equal. find_unused_parameters:
        # objectives may leave parts of the model out of the graph (e.g. lm_head for a value head).
        self.model: nn.Module = self.module if distributed.world_size() == 1 else DistributedDataParallel(
            self.module, device_ids=[device] if device.type == "cuda" else None,
            process_group=distributed.group_for(device), find_unused_parameters=True)
        self.optimizer = build_optimizer(self.module, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.parked: HostCopy | None = None  # the device state while offloaded

    def offload(self) -> int:
        """Weights, gradients and optimizer state to host memory; returns the bytes moved. (Under
        DDP its gradient buckets stay on the device: DeepSpeed ZeRO-2/3 offloads its buffers too.)"""
        if self.parked is None:
            self.parked = offload(self.module, self.optimizer, self.device)
        return self.parked.nbytes

    def reload(self) -> None:
        if self.parked is not None:
            reload(self.parked, self.device)
            self.parked = None

    def accumulate(self, last: bool) -> ContextManager[Any]:
        """Around one micro-batch's forward+backward: DDP all-reduces only in the last one."""
        if last or not isinstance(self.model, DistributedDataParallel):
            return contextlib.nullcontext()
        return self.model.no_sync()

    def autocast(self) -> ContextManager[Any]:
        """Around every forward: bf16 compute with fp32 master weights."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.dtype == "bf16")

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(self) -> float:
        """Clip, update, advance the schedule, clear grads; returns the pre-clip global grad norm."""
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), max_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def gathered(self, tensor: torch.Tensor) -> ContextManager[Any]:
        return contextlib.nullcontext()  # every rank holds full weights

    def full_shape(self, tensor: torch.Tensor) -> tuple[int, ...]:
        return tuple(tensor.shape)

    def save(self, path: Path, client_state: dict[str, Any]) -> None:
        if distributed.rank() == 0:  # DDP ranks hold identical state
            path.mkdir(parents=True, exist_ok=True)
            torch.save({"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(), "client_state": client_state},
                       path / STATE_FILE)
        distributed.barrier()

    def load(self, path: Path) -> dict[str, Any]:
        state = torch.load(path / STATE_FILE, map_location=self.device, weights_only=True)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        return state["client_state"]
