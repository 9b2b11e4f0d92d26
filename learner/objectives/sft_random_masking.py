"""SFT on reference solutions, MDM style: a mask ratio ~ U[mask_ratio] per pair, weight 1/ratio."""
from __future__ import annotations

import torch

from models.config import ModelConfig
from rollout.trajectory import Trajectory

from ..algo_knobs import AlgoKnobs
from ..rows import Row, Sequence
from .common import Objective, bernoulli, masked_row, per_trajectory, uniform


def sft_random_masking_rows(trajs: list[Trajectory], algo: AlgoKnobs, cfg: ModelConfig, gen: torch.Generator,
                            pack_budget: int | None = None) -> list[Row]:
    def row(t: Trajectory, seq: Sequence, i: int) -> list[Row]:
        ratio = uniform(gen, *algo.mask_ratio)
        return [masked_row(seq, bernoulli(gen, seq.response_len, ratio, True), 1.0 / ratio, cfg, t.block_size, i)]
    return per_trajectory(trajs, cfg, row)


OBJECTIVE = Objective("sft_random_masking", sft_random_masking_rows, redraws_masks=True, supervised_on="references")
