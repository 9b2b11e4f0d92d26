"""Model, data and loss shared by the engine tests, and the 2-rank worker they spawn.

Each step's batch is 4 rows. Rank r trains rows 2r, 2r+1; every micro-batch's loss is divided by
the rank's token count, so the mean over ranks (what DP gradient averaging computes) is the
full-batch mean that the single-process reference trains on.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from learner.distributed import close_distributed, init_distributed
from learner.engine import TrainEngine
from learner.engine_config import EngineConfig
from models.tiny import synthetic_config
from models.transformer import DiffusionLM

VOCAB, ROWS, COLS = 64, 4, 8


def make_model(seed: int = 0) -> DiffusionLM:
    torch.manual_seed(seed)
    return DiffusionLM(synthetic_config(VOCAB, family="tiny", eos_token_id=1))  # mask VOCAB - 1, pad 0


def engine_cfg(**kw) -> EngineConfig:
    return EngineConfig(**{"lr": 1e-3, "weight_decay": 0.01, "grad_clip": 1.0, **kw})


def batch(step: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (ROWS, COLS), generator=torch.Generator().manual_seed(100 + step))


def full_batch(step: int) -> list[tuple[torch.Tensor, int]]:
    """The single-process reference: the whole batch as one micro-batch."""
    ids = batch(step)
    return [(ids, ids.numel())]


def rank_micro_batches(step: int, rank: int, split: bool) -> list[tuple[torch.Tensor, int]]:
    """Rank `rank`'s half of the batch; split=True cuts it into two 1-row micro-batches."""
    ids = batch(step)[2 * rank:2 * rank + 2]
    parts = ids.split(1) if split else [ids]
    return [(part, ids.numel()) for part in parts]


def loss_fn(model, mb: tuple[torch.Tensor, int]) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy of the next token, summed and divided by the step's (per-rank) token count."""
    ids, denom = mb
    logits = model(ids, torch.arange(COLS).expand_as(ids))
    loss = F.cross_entropy(logits.flatten(0, 1), ids.roll(-1, dims=1).flatten(), reduction="sum") / denom
    return loss, {"token_frac": ids.numel() / denom}  # sums to 1 per rank and step


def quiet() -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch deprecations hit by DeepSpeed
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)


def step(engine: TrainEngine, s: int, rank: int, split: bool) -> tuple[dict, dict]:
    """Train on step s's shard; (metrics, full state dict after the step)."""
    return engine.train_step(rank_micro_batches(s, rank, split), loss_fn), engine.full_state_dict()


def run_steps(engine: TrainEngine, rank: int, split: bool) -> list[tuple[dict, dict]]:
    return [step(engine, s, rank, split) for s in (0, 1)]


def two_rank_worker(rank: int, port: int, out: str) -> None:
    """Every multi-rank check in one process pair: DeepSpeed's start-up is the slow part."""
    quiet()
    torch.set_num_threads(1)  # two ranks share the test machine's cores
    init_distributed(rank, 2, "127.0.0.1", port, torch.device("cpu"))
    out_dir, res = Path(out), {}

    # ZeRO-2 with the optimizer offloaded; save after step 1, resume a fresh engine at step 2.
    zero2 = engine_cfg(backend="deepspeed", zero_stage=2, offload_optimizer=True)
    z2 = TrainEngine(make_model(), zero2)
    res["zero2"] = [step(z2, 0, rank, split=True)]
    z2.save(out_dir / "zero2_ckpt")
    res["zero2"].append(step(z2, 1, rank, split=True))
    resumed = TrainEngine(make_model(seed=1), zero2)
    resumed.load(out_dir / "zero2_ckpt")
    res["zero2_resumed_step"] = resumed.global_step
    res["zero2_resumed"] = step(resumed, 1, rank, split=True)

    # ZeRO-3 with offloaded, gradient-checkpointed params; unequal micro-batch counts per rank.
    z3 = TrainEngine(make_model(), engine_cfg(backend="deepspeed", zero_stage=3, offload_params=True,
                                              gradient_checkpointing=True))
    res["zero3"] = run_steps(z3, rank, split=rank == 0)
    with torch.no_grad():
        res["zero3_logits"] = z3.module(batch(9), torch.arange(COLS).expand(ROWS, COLS))
    z3.export_hf(out_dir / "zero3_hf")
    try:
        z3.train_step([] if rank == 0 else rank_micro_batches(0, rank, False), loss_fn)
    except ValueError as e:
        res["one_rank_empty"] = str(e)
    res["all_empty"] = z3.train_step([], loss_fn)

    zero0 = TrainEngine(make_model(), engine_cfg(backend="deepspeed", zero_stage=0))
    res["zero0"] = run_steps(zero0, rank, split=False)
    res["ddp"] = run_steps(TrainEngine(make_model(), engine_cfg()), rank, split=True)
    torch.save(res, out_dir / f"rank{rank}.pt")
    close_distributed()
