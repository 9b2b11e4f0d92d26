"""AGRPO (docs/design.md §6.3): trajectory-exact like TraceRL, but M decoding steps per trajectory drawn by
systematic sampling from q (uniform or ∝ entropy), each weighted 1/(M q(t)); drawn once per step."""
from __future__ import annotations

import torch

from models.config import ModelConfig
from rollout.trajectory import Trajectory

from ..algo_knobs import AlgoKnobs
from ..rows import Row, Sequence, round_rows, state_row
from .common import Objective, per_trajectory


def agrpo_trajectory_rows(t: Trajectory, i: int, algo: AlgoKnobs, cfg: ModelConfig, gen: torch.Generator,
                          pack_budget: int | None = None) -> list[Row]:
    """M steps per trajectory by systematic (stratified) sampling from q (uniform or ∝ entropy);
    weight 1/(M q(t)) makes Σ over drawn steps an unbiased estimate of the sum over all steps."""
    seq = Sequence.of(t, cfg.mask_token_id)
    step_map = torch.tensor(t.step_map)
    steps, where = torch.unique(step_map, return_inverse=True)
    if algo.agrpo_sampling == "entropy":
        mass = torch.zeros(len(steps), dtype=torch.float64).index_add_(
            0, where, torch.tensor(t.entropies, dtype=torch.float64)).float() + 1e-6
    else:
        mass = torch.ones(len(steps))
    q = (mass / mass.sum()).double()
    M = algo.agrpo_samples
    offset = float(torch.rand((), generator=gen))
    picks = torch.searchsorted(q.cumsum(0), (torch.arange(M, dtype=torch.float64) + offset) / M)
    picks = picks.clamp(max=len(steps) - 1)
    weight = torch.zeros(len(steps), dtype=torch.float64).index_add_(0, picks, 1.0 / (M * q[picks]))
    drawn = torch.zeros(len(steps), dtype=torch.bool)
    drawn[picks] = True
    if cfg.attention != "block_causal":
        return [state_row(seq, [int(steps[k])], torch.full((len(seq.ids),), float(weight[k])),
                          cfg.mask_token_id, int(cfg.shift_logits), i, r)
                for r, k in enumerate(drawn.nonzero().squeeze(1).tolist())]
    # Drawn steps of different blocks share a round; steps of the same block need separate rounds.
    return round_rows([t], [i], t.block_size, 1, cfg.mask_token_id, pack_budget, [weight[where].float()],
                      [drawn[where]])


def agrpo_rows(trajs: list[Trajectory], algo: AlgoKnobs, cfg: ModelConfig, gen: torch.Generator,
               pack_budget: int | None = None) -> list[Row]:
    return per_trajectory(trajs, cfg, lambda t, seq, i: agrpo_trajectory_rows(t, i, algo, cfg, gen, pack_budget))


OBJECTIVE = Objective("agrpo", agrpo_rows, redraws_masks=False)
