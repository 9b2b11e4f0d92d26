"""Random-masking baseline: response tokens masked with a ratio ~ U[mask_ratio] (at least one),
weight 1; fresh masks per pass."""
from __future__ import annotations

import torch

from models.config import ModelConfig
from rollout.trajectory import Trajectory

from ..algo_knobs import AlgoKnobs
from ..rows import Row
from .common import Objective, bernoulli, masked_row, per_trajectory, uniform


def random_masking_rows(trajs: list[Trajectory], algo: AlgoKnobs, cfg: ModelConfig, gen: torch.Generator,
                        pack_budget: int | None = None) -> list[Row]:
    return per_trajectory(trajs, cfg, lambda t, seq, i: [masked_row(
        seq, bernoulli(gen, seq.response_len, uniform(gen, *algo.mask_ratio), True), 1.0, cfg, t.block_size, i)])


OBJECTIVE = Objective("random_masking", random_masking_rows, redraws_masks=True)
