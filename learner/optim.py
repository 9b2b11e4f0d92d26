"""AdamW and its learning-rate schedule, shared by both engine backends."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from .engine_config import EngineConfig


def lr_factor(step: int, cfg: EngineConfig) -> float:
    """Multiplier of cfg.lr for the optimizer step with 0-based index `step`.

    Warm-up is linear and never 0: the k-th step (k = step + 1) of warm-up uses k / warmup_steps,
    so the first update already moves the weights. Cosine then decays from 1 at k = warmup_steps
    to min_lr_ratio at k = total_steps and stays there; its warm-up ends before the last step
    (a run shorter than warmup_steps still decays).
    """
    k = step + 1
    warm = min(cfg.warmup_steps, cfg.total_steps - 1) if cfg.schedule == "cosine" else cfg.warmup_steps
    if k < warm:
        return k / warm
    if cfg.schedule == "constant":
        return 1.0
    progress = min(1.0, (k - warm) / (cfg.total_steps - warm))
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(module: nn.Module, cfg: EngineConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: decaying norm gains and biases pulls them to 0."""
    params = [p for p in module.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: EngineConfig) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
