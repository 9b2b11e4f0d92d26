"""coupled-GRPO: a mask M_t (t ~ U[coupled_t]) and its complement, so each token is scored once,
weighted 1/t and 1/(1-t); fresh masks per pass."""
from __future__ import annotations

import torch

from models.config import ModelConfig
from rollout.trajectory import Trajectory

from ..algo_knobs import AlgoKnobs
from ..rows import Row, Sequence
from .common import Objective, bernoulli, masked_row, per_trajectory, uniform


def coupled_grpo_rows(trajs: list[Trajectory], algo: AlgoKnobs, cfg: ModelConfig, gen: torch.Generator,
                      pack_budget: int | None = None) -> list[Row]:
    def pair(t: Trajectory, seq: Sequence, i: int) -> list[Row]:
        ratio = uniform(gen, *algo.coupled_t)
        masked = bernoulli(gen, seq.response_len, ratio, False)
        return [masked_row(seq, masked, 1.0 / ratio, cfg, t.block_size, i, 0),
                masked_row(seq, ~masked, 1.0 / (1.0 - ratio), cfg, t.block_size, i, 1)]
    return per_trajectory(trajs, cfg, pair)


OBJECTIVE = Objective("coupled_grpo", coupled_grpo_rows, redraws_masks=True)
