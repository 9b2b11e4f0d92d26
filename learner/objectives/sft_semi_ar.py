"""Semi-autoregressive SFT on reference solutions: [clean | noisy copies] rows, an independent mask
ratio ~ U[mask_ratio] per block, weight 1/ratio."""
from __future__ import annotations

import torch

from models.config import ModelConfig
from rollout.trajectory import Trajectory

from ..algo_knobs import AlgoKnobs
from ..rows import Copies, Row, Sequence, copy_row
from .common import NAN, Objective, bernoulli, per_trajectory, uniform


def sft_semi_ar_rows(trajs: list[Trajectory], algo: AlgoKnobs, cfg: ModelConfig, gen: torch.Generator,
                     pack_budget: int | None = None) -> list[Row]:
    def row(t: Trajectory, seq: Sequence, i: int) -> list[Row]:
        P, L, N, B = seq.prompt_len, seq.response_len, len(seq.ids), t.block_size
        copies = []
        for b in range(P // B, (P + L - 1) // B + 1):
            span = torch.arange(b * B, min((b + 1) * B, N))
            ratio = uniform(gen, *algo.mask_ratio)
            # Response and the EOS fill after it: the sampler needs the model to fill a block's
            # slots after EOS too, and to do so confidently.
            resp = span >= P
            hidden = torch.zeros(len(span), dtype=torch.bool)
            hidden[resp] = bernoulli(gen, int(resp.sum()), ratio, True)
            copies.append(Copies(span, torch.ones_like(span), ~hidden, torch.where(hidden, 1.0 / ratio, NAN)))
        return [copy_row(seq, B, Copies.cat(copies), cfg.mask_token_id, i)]
    return per_trajectory(trajs, cfg, row)


OBJECTIVE = Objective("sft_semi_ar", sft_semi_ar_rows, redraws_masks=True, supervised_on="references")
