"""The learner's training engine (docs/design.md §6.4): one per learner process, kept for the whole run.

Optimizer and scheduler state therefore persist across RL steps (the reference rebuilt AdamW
every step). Gradient accumulation lives in `train_step` only; the backends (engine_torch.py,
engine_deepspeed.py) differ just in how they backward, step, gather and save.

Data parallelism: gradients are averaged over ranks (DDP / DeepSpeed semantics), so a rank's
loss should be normalised such that the mean over ranks is the global loss. train_step,
full_tensors, full_state_dict, save, load and export_hf are collective: all ranks call them together.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Protocol

import torch
from torch import nn

from models.checkpoint import save_model
from models.transformer import synced_state
from models.vision import build_model

from . import distributed
from .engine_config import EngineConfig
from .engine_torch import TorchBackend
from .host_memory import return_large_frees

LossFn = Callable[[Any, Any], tuple[torch.Tensor, dict[str, float]]]


class Backend(Protocol):
    module: nn.Module  # the model itself
    model: Any  # what loss_fn receives: the DDP / DeepSpeed wrapper, or the model itself
    device: torch.device

    def accumulate(self, last: bool) -> ContextManager[Any]: ...
    def autocast(self) -> ContextManager[Any]: ...
    def backward(self, loss: torch.Tensor) -> None: ...
    def lr(self) -> float: ...
    def step(self) -> float: ...
    def gathered(self, tensor: torch.Tensor) -> ContextManager[Any]: ...
    def full_shape(self, tensor: torch.Tensor) -> tuple[int, ...]: ...
    def save(self, path: Path, client_state: dict[str, Any]) -> None: ...
    def load(self, path: Path) -> dict[str, Any]: ...
    def offload(self) -> int: ...
    def reload(self) -> None: ...


class TrainEngine:
    def __init__(self, model: nn.Module, cfg: EngineConfig, device: torch.device | None = None) -> None:
        """`device`: where the engine trains (default: where `model` is). The caller owns that choice
        (a learner actor takes it from Ray's assignment); nothing here asks torch which GPU exists.
        The weights are kept in fp32 whatever dtype `model` was loaded in: they are the optimizer's
        master weights (AdamW on bf16 weights rounds small updates away). engine.dtype=bf16 is the
        compute dtype (autocast), or, under DeepSpeed, its bf16 mode with fp32 master weights."""
        device = device or next(model.parameters()).device
        model.to(device=device, dtype=torch.float32)
        if cfg.gradient_checkpointing:  # on every DiffusionLM inside (e.g. a value model's backbone)
            supporting = [m for m in model.modules() if hasattr(m, "gradient_checkpointing")]
            if not supporting:
                raise ValueError(f"engine.gradient_checkpointing=true: {type(model).__name__} has no "
                                 "gradient_checkpointing switch")
            for m in supporting:
                m.gradient_checkpointing = True
        self.cfg = cfg
        self.global_step = 0  # optimizer steps taken (skipped steps do not count)
        if cfg.backend == "deepspeed":
            from .engine_deepspeed import DeepSpeedBackend  # deepspeed is slow to import: only when used
            self._backend: Backend = DeepSpeedBackend(model, cfg, device)
        else:
            self._backend = TorchBackend(model, cfg, device)
        if self.device.type == "cpu":  # activations live in host memory: keep its peak near what is live
            return_large_frees()

    @property
    def module(self) -> nn.Module:
        """The model, for forwards outside training (e.g. old log-probs under no_grad). Under
        ZeRO-3 its forward gathers weights, so all ranks must run it together."""
        return self._backend.module

    @property
    def device(self) -> torch.device:
        """Where loss_fn should put its micro-batch tensors."""
        return self._backend.device

    def autocast(self) -> ContextManager[Any]:
        """The compute precision of every forward of this engine's model, with or without grad:
        old log-probs must be computed exactly as the training forward computes new ones, or the
        importance ratio is not 1 on the first pass and on-policy tokens get clipped."""
        return self._backend.autocast()

    def train_step(self, micro_batches: list[Any], loss_fn: LossFn) -> dict[str, float]:
        """One optimizer step over `micro_batches`, accumulating their gradients.

        loss_fn(model, micro_batch) -> (loss, metrics): `model` is the training wrapper — call it
        like the model; read attributes from `engine.module`. Each micro-batch's loss is
        backpropagated as is: the objective normalises it by the whole step's denominator, so the
        sum over micro-batches is the step loss. Metrics must be normalised the same way and carry
        the same keys on every rank: they are summed over micro-batches, then averaged over ranks
        (as is "loss", added here). Also returned: "grad_norm" (global, before clipping) and "lr"
        (the one this step used).

        Ranks may hold different numbers of micro-batches: one with fewer re-runs loss_fn on its
        first micro-batch with the loss weighted 0 and the metrics dropped (so loss_fn should not
        count things through side effects). Empty `micro_batches` on every rank: no-op returning
        {"skipped": 1.0}. Empty on some ranks only: ValueError on all ranks.
        """
        b = self._backend
        fewest, most = distributed.count_range(len(micro_batches))
        if most == 0:
            return {"skipped": 1.0}
        if fewest == 0:
            raise ValueError("train_step: some ranks got no micro-batches while others did; give every "
                             "rank at least one, or none to all of them to skip the step")
        b.module.train()
        sums: dict[str, float] = defaultdict(float)
        # ZeRO-2/3 communicate inside every backward (and ZeRO-3 in every forward), so all ranks run
        # `most` of them: a rank with fewer micro-batches repeats its first one with zero weight.
        for i in range(most):
            real = i < len(micro_batches)
            with b.accumulate(last=i == most - 1):
                with b.autocast():
                    loss, metrics = loss_fn(b.model, micro_batches[i if real else 0])
                b.backward(loss if real else loss * 0.0)
            if real:
                for key, value in {"loss": loss.detach(), **metrics}.items():
                    sums[key] += float(value)
        lr = b.lr()
        grad_norm = b.step()
        self.global_step += 1
        return {**distributed.mean_over_ranks(sums), "grad_norm": grad_norm, "lr": lr}

    def offload(self) -> int:
        """Move the engine's device state (weights, gradients, optimizer state) to host memory and
        release the device's cached memory, for a colocated rollout worker; returns the bytes
        moved. Idempotent. Call `reload` before any other use of the engine."""
        moved = self._backend.offload()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return moved

    def reload(self) -> None:
        """Undo `offload` (no-op when nothing is offloaded)."""
        self._backend.reload()

    def full_layout(self, synced: bool = False) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
        """(name, dtype, full shape) of each full_tensors item, in the same order, without gathering."""
        return [(name, t.dtype, self._backend.full_shape(t)) for name, t in self._state(synced)]

    def _state(self, synced: bool) -> list[tuple[str, torch.Tensor]]:
        """The whole state, or (synced) what a weight sync carries: all but the modules the model keeps
        frozen (`DiffusionLM.frozen`, e.g. the vision tower), which every holder has from the checkpoint."""
        state = synced_state(self.module, keep_vars=True) if synced else self.module.state_dict(keep_vars=True)
        return list(state.items())

    def full_tensors(self, synced: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, full weight) on every rank, in state-dict order, on the engine's device, without a
        copy: the parameter's own memory (under ZeRO-3 gathered one tensor at a time), valid only
        until the next item is requested. Collective: every rank must exhaust it together.
        `synced`: only what a weight sync carries (`full_layout(synced=True)`)."""
        for name, tensor in self._state(synced):
            with self._backend.gathered(tensor):
                yield name, tensor.detach()

    def full_state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """A copy of the full weights on CPU on rank 0; {} on the other ranks. Floating tensors in
        `dtype` (cast on the engine's device), default the module's own (fp32; bf16 under DeepSpeed
        bf16)."""
        out: dict[str, torch.Tensor] = {}
        for name, tensor in self.full_tensors():
            if distributed.rank() == 0:
                cast = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
                out[name] = tensor.to(cast).to("cpu", copy=True)
        return out

    def save(self, path: str | Path) -> None:
        """Model, optimizer, scheduler and step counter, so that load + step == uninterrupted.
        `path` must be on a filesystem every rank can read (rank 0 writes the shared parts)."""
        self._backend.save(Path(path), {"global_step": self.global_step})

    def load(self, path: str | Path) -> None:
        self.global_step = self._backend.load(Path(path))["global_step"]

    def export_hf(self, path: str | Path, tokenizer: Any = None, dtype: torch.dtype | None = None) -> None:
        """Write the policy (a DiffusionLM) in its HF layout, floating weights in `dtype` (the
        checkpoint's own, e.g. bf16, rather than the fp32 master weights); rank 0 writes."""
        state = self.full_state_dict(dtype)
        if distributed.rank() == 0:
            with torch.device("meta"):  # a weightless shell to carry the gathered tensors
                shell = build_model(self.module.config)
            shell.load_state_dict(state, assign=True)
            save_model(shell, path, tokenizer)
        distributed.barrier()
