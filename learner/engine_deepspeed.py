"""DeepSpeed engine backend: ZeRO stage 0-3, optional CPU offload, bf16 mode, gloo on CPU.

The client optimizer is torch's AdamW (DeepSpeedCPUAdam would need JIT-compiled ops). We own the
gradient-accumulation boundary: DeepSpeed is configured for one micro-batch per step and told
before each backward whether it is the step's last one, so a step may have any number of
micro-batches and no loss is divided by an accumulation count.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ContextManager

import deepspeed
import torch
from deepspeed.accelerator import get_accelerator
from torch import nn

from . import distributed
from .engine_config import EngineConfig
from .optim import build_optimizer, build_scheduler

TAG = "engine"  # fixed checkpoint tag: saving into the same directory again overwrites


def deepspeed_config(cfg: EngineConfig) -> dict[str, Any]:
    pin = torch.cuda.is_available()
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": pin}
    if cfg.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": pin}
    return {
        # Batch sizes only feed DeepSpeed's throughput bookkeeping: train_step owns the boundary.
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": cfg.grad_clip,  # explicit: DeepSpeed's default is 1.0, not off
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.dtype == "bf16"},
        # bf16 mode keeps fp32 master weights; gradients are accumulated over micro-batches in fp32
        # too (DeepSpeed's default accumulates them in the bf16 model dtype).
        **({"data_types": {"grad_accum_dtype": "fp32"}} if cfg.dtype == "bf16" else {}),
        "zero_allow_untested_optimizer": True,  # torch AdamW as client optimizer
        "zero_force_ds_cpu_optimizer": False,  # ... also when the optimizer is offloaded
        "steps_per_print": None,
        "wall_clock_breakdown": False,
    }


def _skip_cpu_shm_kernel() -> None:
    """DeepSpeed's comm layer JIT-compiles a shared-memory all-reduce kernel on CPU (~50 s on 2
    cores) that only its inference all-reduce uses; training collectives go through gloo."""
    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is not None:
        deepspeed.ops.__compatible_ops__[builder.NAME] = False


class DeepSpeedBackend:
    def __init__(self, model: nn.Module, cfg: EngineConfig, device: torch.device) -> None:
        accelerator = get_accelerator().device_name()
        if accelerator != device.type:
            raise ValueError(f"engine.backend=deepspeed: the engine trains on {device} but DeepSpeed's "
                             f"accelerator is {accelerator!r}; the actor that owns the device must hide the "
                             "others (CUDA_VISIBLE_DEVICES) before DeepSpeed is imported")
        if not distributed.is_initialized():  # DeepSpeed needs a process group, even of one rank
            distributed.init_distributed(0, 1, "127.0.0.1", distributed.free_port(), device)
        if device.type == "cpu":
            _skip_cpu_shm_kernel()
        self.cfg = cfg
        # dist_init_required=False: DeepSpeed reuses our group (gloo on CPU) and never makes its own
        # (its CPU accelerator would pick "ccl" when oneCCL bindings happen to be installed).
        self.engine, _, _, _ = deepspeed.initialize(
            model=model, optimizer=build_optimizer(model, cfg), config=deepspeed_config(cfg),
            lr_scheduler=lambda opt: build_scheduler(opt, cfg), dist_init_required=False)
        self.model = self.engine
        self.module: nn.Module = self.engine.module
        self.device = device
        self.parked = False  # offload_states moved the engine's buffers to the host

    def accumulate(self, last: bool) -> ContextManager[Any]:
        # Without this ZeRO-1/2 would treat every backward as a step boundary (1 micro-batch per step).
        self.engine.set_gradient_accumulation_boundary(last)
        return contextlib.nullcontext()

    def autocast(self) -> ContextManager[Any]:
        return contextlib.nullcontext()  # bf16: DeepSpeed holds the module in bf16 itself

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss, scale_wrt_gas=False)  # the objective already normalised it

    def lr(self) -> float:
        return self.engine.get_lr()[0]

    def step(self) -> float:
        """Clip, update, advance the schedule, clear grads; returns the pre-clip global grad norm."""
        # Stage 0 in fp32 steps the bare torch optimizer and records no norm: take it here, after the
        # boundary backward has all-reduced the grads and before step() clears them.
        own_norm = _grad_norm(self.module) if (self.cfg.zero_stage, self.cfg.dtype) == (0, "fp32") else None
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm if norm is not None else own_norm)

    def offload(self) -> int:
        """ZeRO-1/2/3 optimizer, master-weight, gradient and parameter buffers to pinned host memory."""
        if not self.parked:
            before = torch.cuda.memory_allocated(self.device) if self.device.type == "cuda" else 0
            self.engine.offload_states()
            self.parked = True
            return before - (torch.cuda.memory_allocated(self.device) if self.device.type == "cuda" else 0)
        return 0

    def reload(self) -> None:
        if self.parked:
            self.engine.reload_states()
            self.parked = False

    def gathered(self, tensor: torch.Tensor) -> ContextManager[Any]:
        """Under ZeRO-3, the full tensor on every rank for the duration; otherwise a no-op."""
        return deepspeed.zero.GatheredParameters([tensor])

    def full_shape(self, tensor: torch.Tensor) -> tuple[int, ...]:
        """Without gathering: a ZeRO-3 partitioned parameter records its full shape in ds_shape."""
        return tuple(getattr(tensor, "ds_shape", tensor.shape))

    def save(self, path: Path, client_state: dict[str, Any]) -> None:
        self.engine.save_checkpoint(str(path), tag=TAG, client_state=client_state)

    def load(self, path: Path) -> dict[str, Any]:
        load_path, client_state = self.engine.load_checkpoint(
            str(path), tag=TAG, load_optimizer_states=True, load_lr_scheduler_states=True)
        if load_path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint with tag {TAG!r} under {path}")
        return client_state


def _grad_norm(module: nn.Module) -> torch.Tensor:
    grads = [p.grad.float() for p in module.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
