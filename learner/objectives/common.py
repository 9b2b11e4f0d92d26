"""What the objectives share: the `Objective` declaration, mask draws, one masked flat row, the
per-trajectory loop, and (prompt, reference) pairs wrapped as trajectories.

Row weights carry the objective's own per-token factor (AGRPO's importance weight, coupled-GRPO's
1/t, MDM's 1/t); step normalisation is applied on top in learner/policy_update.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch

from models.config import ModelConfig
from rollout.trajectory import Trajectory

from ..algo_knobs import AlgoKnobs
from ..rows import Row, Sequence, flat_row

NAN = float("nan")
# trajectories, algo, model config, mask generator, pack budget (None: one row per round) → rows
RowBuilder = Callable[[list[Trajectory], AlgoKnobs, ModelConfig, torch.Generator, "int | None"], list[Row]]


@dataclass(frozen=True)
class Objective:
    """One training objective, as the learner and the driver need to know it."""
    name: str
    rows: RowBuilder  # the rows of one pass over a step's batch
    # True: a fresh mask draw per pass (d1's μ iterations); False: the same rows every pass.
    redraws_masks: bool
    # None: RL on rollouts with advantages; "references": SFT on reference solutions;
    # "rollouts": SFT on the step's correct rollouts, as decoded.
    supervised_on: Literal["references", "rollouts"] | None = None
    uses_value: bool = False  # a value model gives token-wise advantages (TraceRL §value)


def uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def bernoulli(gen: torch.Generator, n: int, p: float, at_least_one: bool) -> torch.Tensor:
    draws = torch.rand(n, generator=gen) < p
    if at_least_one and n and not bool(draws.any()):
        draws[int(torch.randint(n, (), generator=gen))] = True
    return draws


def masked_row(seq: Sequence, masked: torch.Tensor, weight: float, cfg: ModelConfig, block_size: int,
               traj_index: int, round_index: int = 0, prompt_masked: torch.Tensor | None = None) -> Row:
    """One flat row: response slot j masked iff masked[j] (trained with `weight`), prompt visible
    unless prompt_masked says otherwise. Block models keep their block-causal attention."""
    P, L, N = seq.prompt_len, seq.response_len, len(seq.ids)
    prompt = torch.zeros(P, dtype=torch.bool) if prompt_masked is None else prompt_masked
    hide = torch.cat([prompt, masked, torch.ones(N - P - L, dtype=torch.bool)])
    trained = torch.full((N,), NAN)
    trained[P:P + L] = torch.where(masked, weight, NAN)
    attention_block = block_size if cfg.attention == "block_causal" else None
    return flat_row(seq, ~hide, trained, cfg.mask_token_id, attention_block, int(cfg.shift_logits), traj_index,
                    round_index)


def per_trajectory(trajs: list[Trajectory], cfg: ModelConfig,
                   build: Callable[[Trajectory, Sequence, int], list[Row]]) -> list[Row]:
    """build(trajectory, its sequence, its index) over the non-empty trajectories, in order (the
    order the generator's draws are taken in); rows that train no token are dropped."""
    rows: list[Row] = []
    for i, t in enumerate(trajs):
        if t.response_ids:
            rows += build(t, Sequence.of(t, cfg.mask_token_id), i)
    return [r for r in rows if len(r.targets)]


def sft_trajectory(prompt_ids: list[int], response_ids: list[int], block_size: int, eos_id: int) -> Trajectory:
    """A (prompt, response) pair as a trajectory whose last block is filled up with EOS."""
    fill = -(len(prompt_ids) + len(response_ids)) % block_size
    n = len(response_ids)
    return Trajectory(prompt_ids=list(prompt_ids), response_ids=list(response_ids), step_map=[1] * n,
                      logprobs=[0.0] * n, entropies=[0.0] * n, block_size=block_size, finish_reason="eos",
                      num_forwards=1, tail_ids=[eos_id] * fill, tail_steps=[1] * fill)
