"""TraceRL (docs/design.md §6.1): every committed response token trained once, on the state the sampler
decoded it from (rounds of s merged steps per block); the same rows every pass."""
from __future__ import annotations

import torch

from models.config import ModelConfig
from rollout.trajectory import Trajectory

from ..algo_knobs import AlgoKnobs
from ..rows import Row, trace_rows_batch
from .common import Objective


def trace_rows(trajs: list[Trajectory], algo: AlgoKnobs, cfg: ModelConfig, gen: torch.Generator,
               pack_budget: int | None = None) -> list[Row]:
    """Every non-empty trajectory's rounds in one set of tensor ops (no random draws)."""
    kept = [i for i, t in enumerate(trajs) if t.response_ids]
    return trace_rows_batch([trajs[i] for i in kept], kept, cfg.attention, algo.shrink, cfg.mask_token_id,
                            int(cfg.shift_logits), pack_budget)


OBJECTIVE = Objective("tracerl", trace_rows, redraws_masks=False)
