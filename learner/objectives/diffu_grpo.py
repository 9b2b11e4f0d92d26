"""diffu-GRPO (d1): the completion fully masked, each prompt token masked with p; fresh masks per pass."""
from __future__ import annotations

import torch

from models.config import ModelConfig
from rollout.trajectory import Trajectory

from ..algo_knobs import AlgoKnobs
from ..rows import Row
from .common import Objective, bernoulli, masked_row, per_trajectory


def diffu_grpo_rows(trajs: list[Trajectory], algo: AlgoKnobs, cfg: ModelConfig, gen: torch.Generator,
                    pack_budget: int | None = None) -> list[Row]:
    return per_trajectory(trajs, cfg, lambda t, seq, i: [masked_row(
        seq, torch.ones(seq.response_len, dtype=torch.bool), 1.0, cfg, t.block_size, i,
        prompt_masked=bernoulli(gen, seq.prompt_len, algo.d1_prompt_mask_p, False))])


OBJECTIVE = Objective("diffu_grpo", diffu_grpo_rows, redraws_masks=True)
