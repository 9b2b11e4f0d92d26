"""GPU check section 7: a single-rank process group (cpu:gloo,cuda:nccl on CUDA, gloo on a CPU) and DeepSpeed
ZeRO-2 / ZeRO-3 bf16 train steps of a small model through the learner's TrainEngine,
with the full-weight gathering weight sync uses (`full_tensors`). Each section makes its own
process group and destroys it, so the sections after see none."""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from bench.gpu_check_common import SectionSkipped, Setup
from learner import distributed
from learner.engine import TrainEngine
from learner.engine_config import EngineConfig
from models.tiny import synthetic_config
from models.transformer import DiffusionLM

VOCAB, ROWS, COLS = 1024, 4, 64
SHAPE = dict(hidden_size=256, intermediate_size=512, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=64)


@contextmanager
def single_rank_group(device: torch.device) -> Iterator[float]:
    """The default process group of one rank (the learner's own set-up); yields its set-up seconds."""
    if dist.is_initialized():
        raise RuntimeError("a process group already exists: the previous section did not destroy its own")
    start = time.perf_counter()
    distributed.init_distributed(0, 1, "127.0.0.1", distributed.free_port(), device)
    try:
        yield time.perf_counter() - start
    finally:
        dist.destroy_process_group()


def process_group(setup: Setup) -> dict[str, Any]:
    """The learner's default group for this device: a device tensor through it (NCCL on a GPU) and
    a host tensor through the group the learner's host-side figures use (gloo)."""
    with single_rank_group(setup.device) as init_s:
        t = torch.arange(4, dtype=torch.float32, device=setup.device)
        dist.all_reduce(t)
        host = torch.arange(4, dtype=torch.float64)
        dist.all_reduce(host, group=distributed.host_group())
        return {"backend": dist.get_backend_config(), "init_s": round(init_s, 3),
                "all_reduce_ok": t.tolist() == [0.0, 1.0, 2.0, 3.0],
                "host_all_reduce_ok": host.tolist() == [0.0, 1.0, 2.0, 3.0]}


def _loss(model: Any, ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Next-token cross-entropy, mean over the micro-batch."""
    logits = model(ids, torch.arange(ids.shape[1], device=ids.device).expand_as(ids))
    return F.cross_entropy(logits.flatten(0, 1).float(), ids.roll(-1, dims=1).flatten()), {}


def zero_steps(stage: int, setup: Setup) -> dict[str, Any]:
    """Two train steps under ZeRO `stage`, then every full weight gathered once."""
    torch.manual_seed(0)
    model = DiffusionLM(synthetic_config(VOCAB, **SHAPE))
    start = time.perf_counter()
    engine = TrainEngine(model, EngineConfig(backend="deepspeed", zero_stage=stage, lr=1e-3, dtype="bf16"),
                         setup.device)
    out: dict[str, Any] = {"init_s": round(time.perf_counter() - start, 3), "loss": [], "grad_norm": [],
                           "step_s": []}
    ids = torch.randint(0, VOCAB - 2, (ROWS, COLS), generator=torch.Generator().manual_seed(0)).to(engine.device)
    for _ in range(2):
        start = time.perf_counter()
        metrics = engine.train_step([ids], _loss)
        out["step_s"].append(round(time.perf_counter() - start, 3))
        out["loss"].append(metrics["loss"])
        out["grad_norm"].append(metrics["grad_norm"])
    layout = {name: tuple(shape) for name, _, shape in engine.full_layout()}
    gathered = {name: tuple(t.shape) for name, t in engine.full_tensors()}
    out["full_tensors_match_layout"] = gathered == layout
    out["params"] = sum(torch.Size(s).numel() for s in layout.values())
    return out


def deepspeed_steps(setup: Setup) -> dict[str, Any]:
    try:
        import deepspeed
    except ImportError as e:
        raise SectionSkipped(f"deepspeed not importable: {e}") from e
    out: dict[str, Any] = {"version": deepspeed.__version__}
    with single_rank_group(setup.device):
        for stage in (2, 3):
            out[f"zero{stage}"] = zero_steps(stage, setup)
    return out
