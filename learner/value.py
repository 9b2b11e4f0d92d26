"""Diffusion value model and its step-level returns/advantages (docs/design.md §6.2)."""
from __future__ import annotations

import math

import torch
from torch import nn

from models.transformer import DiffusionLM
from rollout.trajectory import Trajectory

from .batching import MicroBatch
from .rows import Sequence, block_step_groups, shrink_groups


class ValueModel(nn.Module):
    """A same-family backbone with a zero-initialised linear head: V starts at 0 everywhere."""

    def __init__(self, backbone: DiffusionLM) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = backbone.config
        like = backbone.embed_tokens.weight  # the head follows the backbone's device and dtype
        self.value_head = nn.Linear(backbone.config.hidden_size, 1, device=like.device, dtype=like.dtype)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, mb: MicroBatch) -> torch.Tensor:
        """[M] values of the trained tokens, read at each token's own noisy slot (its pre-step state)."""
        features = None if mb.images is None else self.backbone.row_image_features(mb.images)
        h = self.backbone.hidden_states(mb.input_ids, mb.position_ids, mb.attn_mask, image_features=features)
        return self.value_head(h[mb.value_at]).squeeze(-1).float()


def step_ranks(t: Trajectory, shrink: int, mask_id: int) -> list[int]:
    """0-based index t(j) of each response token's shrunk step among the response's ordered steps."""
    seq = Sequence.of(t, mask_id)
    if t.canvas_len:  # full attention: one global grouping
        groups = shrink_groups(t.step_map, shrink)
    else:  # block models: groups per block; blocks are decoded in order, so concatenation is ordered
        per_block = block_step_groups(seq, t.block_size, shrink)
        for a, b in zip(per_block, list(per_block)[1:]):  # a step in two blocks would leave a rank empty: NaN
            if per_block[b][0][0] <= per_block[a][-1][-1]:
                raise ValueError(f"trajectory {t.prompt_uid}/{t.sample_idx}: step_map steps of block {b} "
                                 f"(from {per_block[b][0][0]}) do not all follow block {a}'s "
                                 f"(to {per_block[a][-1][-1]}); a block model decodes its blocks in order")
        groups = [g for gs in per_block.values() for g in gs]
    rank = {s: k for k, g in enumerate(groups) for s in g}
    return [rank[s] for s in t.step_map]


def token_targets(values: torch.Tensor, rewards: torch.Tensor, ranks: torch.Tensor, gamma: float,
                  lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (R_j, A_j) for one response from token values V_j, rewards r_j and step ranks t(j).

    Step means r*_t, V*_t; R*_t = r*_t + γR*_{t+1}; δ*_t = r*_t − V*_t + γV*_{t+1};
    A*_t = δ*_t + γλA*_{t+1}; R_j = r_j + γR*_{t+1}; A_j = (r_j − V_j) + γV*_{t+1} + γλA*_{t+1}.
    """
    S = int(ranks.max()) + 1
    count = torch.zeros(S, dtype=torch.float64).index_add_(0, ranks, torch.ones_like(values, dtype=torch.float64))
    r_star = torch.zeros(S, dtype=torch.float64).index_add_(0, ranks, rewards.double()) / count
    v_star = torch.zeros(S, dtype=torch.float64).index_add_(0, ranks, values.double()) / count
    R = torch.zeros(S + 1, dtype=torch.float64)  # index S is the empty future
    A = torch.zeros(S + 1, dtype=torch.float64)
    V = torch.cat([v_star, torch.zeros(1, dtype=torch.float64)])
    for s in range(S - 1, -1, -1):
        R[s] = r_star[s] + gamma * R[s + 1]
        A[s] = r_star[s] - V[s] + gamma * V[s + 1] + gamma * lam * A[s + 1]
    nxt = ranks + 1
    returns = rewards.double() + gamma * R[nxt]
    adv = (rewards.double() - values.double()) + gamma * V[nxt] + gamma * lam * A[nxt]
    return returns.float(), adv.float()


def outcome_rewards(ranks: torch.Tensor, outcome: float) -> torch.Tensor:
    """Outcome reward (Â_i, or the raw reward with algo.value.outcome = "reward") on the tokens of
    the final step, 0 elsewhere."""
    return torch.where(ranks == ranks.max(), outcome, 0.0)


def token_rewards(t: Trajectory, ranks: torch.Tensor, outcome: float) -> torch.Tensor:
    """The per-token reward vector r_j of the recursions: the outcome reward plus the trajectory's
    placed process rewards (none: exactly the outcome reward)."""
    final = outcome_rewards(ranks, outcome)
    if not t.process_rewards:
        return final
    if len(t.process_rewards) != len(t.response_ids):
        raise ValueError(f"trajectory {t.prompt_uid}/{t.sample_idx}: {len(t.process_rewards)} process rewards "
                         f"for {len(t.response_ids)} response tokens")
    bad = next((j for j, x in enumerate(t.process_rewards) if not math.isfinite(x)), None)
    if bad is not None:  # it would make every return and advantage up to its step NaN
        raise ValueError(f"trajectory {t.prompt_uid}/{t.sample_idx}: process_rewards[{bad}] = "
                         f"{t.process_rewards[bad]} is not finite")
    return final + torch.tensor(t.process_rewards, dtype=final.dtype)
