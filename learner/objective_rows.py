"""Which rows each objective trains on (DESIGN §6.1, §6.3), built from the two layouts in rows.py.

Row weights carry the objective's own per-token factor (AGRPO's importance weight, coupled-GRPO's
1/t, MDM's 1/t); step normalisation is applied on top in learner/weights.py.
"""
from __future__ import annotations

import torch

from models.config import ModelConfig
from rollout.trajectory import Trajectory

from .algo_config import AlgoConfig
from .rows import Row, Sequence, block_step_groups, copy_row, flat_row, state_copy, state_row, trace_rows


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def _bernoulli(gen: torch.Generator, n: int, p: float, at_least_one: bool) -> list[bool]:
    draws = (torch.rand(n, generator=gen) < p).tolist()
    if at_least_one and n and not any(draws):
        draws[int(torch.randint(n, (), generator=gen))] = True
    return draws


def _masked_row(seq: Sequence, masked: list[bool], weight: float, cfg: ModelConfig, block_size: int,
                traj_index: int, round_index: int = 0, prompt_masked: list[bool] | None = None) -> Row:
    """One flat row: response slot j masked iff masked[j] (trained with `weight`), prompt visible
    unless prompt_masked says otherwise. Block models keep their block-causal attention."""
    P, L = seq.prompt_len, seq.response_len
    hide = (prompt_masked or [False] * P) + masked + [True] * (len(seq.ids) - P - L)
    trained = [None] * P + [weight if m else None for m in masked] + [None] * (len(seq.ids) - P - L)
    attention_block = block_size if cfg.attention == "block_causal" else None
    return flat_row(seq, [not h for h in hide], trained, cfg.mask_token_id, attention_block,
                    int(cfg.shift_logits), traj_index, round_index)


def agrpo_rows(t: Trajectory, i: int, algo: AlgoConfig, cfg: ModelConfig, gen: torch.Generator) -> list[Row]:
    """M steps per trajectory by systematic (stratified) sampling from q (uniform or ∝ entropy);
    weight 1/(M q(t)) makes Σ over drawn steps an unbiased estimate of the sum over all steps."""
    seq = Sequence.of(t, cfg.mask_token_id)
    steps = sorted(set(t.step_map))
    if algo.agrpo_sampling == "entropy":
        mass = torch.tensor([sum(e for e, s in zip(t.entropies, t.step_map) if s == st) for st in steps]) + 1e-6
    else:
        mass = torch.ones(len(steps))
    q = (mass / mass.sum()).double()
    M = algo.agrpo_samples
    offset = float(torch.rand((), generator=gen))
    picks = torch.searchsorted(q.cumsum(0), (torch.arange(M, dtype=torch.float64) + offset) / M).clamp(max=len(steps) - 1)
    weight: dict[int, float] = {}
    for k in picks.tolist():
        weight[steps[k]] = weight.get(steps[k], 0.0) + 1.0 / (M * float(q[k]))
    if cfg.attention != "block_causal":
        return [state_row(seq, [s], cfg.mask_token_id, int(cfg.shift_logits), i, r, w)
                for r, (s, w) in enumerate(sorted(weight.items()))]
    # Drawn steps of different blocks share a row; steps of the same block need separate rows.
    per_block: dict[int, list[int]] = {}
    for b, groups in block_step_groups(seq, t.block_size, 1).items():
        per_block[b] = [g[0] for g in groups if g[0] in weight]
    rounds = max((len(v) for v in per_block.values()), default=0)
    return [copy_row(seq, t.block_size,
                     [state_copy(seq, t.block_size, b, [ss[r]], weight[ss[r]]) for b, ss in per_block.items()
                      if r < len(ss)], cfg.mask_token_id, i, r)
            for r in range(rounds)]


def rl_rows(trajs: list[Trajectory], algo: AlgoConfig, cfg: ModelConfig, gen: torch.Generator) -> list[Row]:
    """Rows for one pass of an RL objective. `gen` draws the baselines' random masks (a fresh draw
    per call, i.e. per inner iteration μ, as d1 prescribes)."""
    rows: list[Row] = []
    shift, mask_id = int(cfg.shift_logits), cfg.mask_token_id
    for i, t in enumerate(trajs):
        if not t.response_ids:
            continue
        seq, L, P, B = Sequence.of(t, mask_id), len(t.response_ids), len(t.prompt_ids), t.block_size
        if algo.name in ("tracerl", "tracerl_value"):
            rows += trace_rows(t, i, cfg.attention, algo.shrink, mask_id, shift)
        elif algo.name == "agrpo":
            rows += agrpo_rows(t, i, algo, cfg, gen)
        elif algo.name == "diffu_grpo":  # completion fully masked, prompt tokens masked with p
            rows.append(_masked_row(seq, [True] * L, 1.0, cfg, B, i,
                                    prompt_masked=_bernoulli(gen, P, algo.d1_prompt_mask_p, False)))
        elif algo.name == "coupled_grpo":  # mask M_t and its complement: each token scored once
            ratio = _uniform(gen, *algo.coupled_t)
            masked = _bernoulli(gen, L, ratio, False)
            rows.append(_masked_row(seq, masked, 1.0 / ratio, cfg, B, i, 0))
            rows.append(_masked_row(seq, [not m for m in masked], 1.0 / (1.0 - ratio), cfg, B, i, 1))
        elif algo.name == "random_masking":
            rows.append(_masked_row(seq, _bernoulli(gen, L, _uniform(gen, *algo.mask_ratio), True), 1.0, cfg, B, i))
        else:
            raise ValueError(f"algo.name={algo.name!r} is not an RL objective")
    return [r for r in rows if r.targets]


def sft_rows(trajs: list[Trajectory], algo: AlgoConfig, cfg: ModelConfig, gen: torch.Generator) -> list[Row]:
    """SFT rows; plain (prompt, response) pairs come wrapped by `sft_trajectory`."""
    rows: list[Row] = []
    mask_id = cfg.mask_token_id
    for i, t in enumerate(trajs):
        if not t.response_ids:
            continue
        seq, L, B = Sequence.of(t, mask_id), len(t.response_ids), t.block_size
        if algo.name == "sft_trace":
            rows += trace_rows(t, i, cfg.attention, algo.shrink, mask_id, int(cfg.shift_logits))
        elif algo.name == "sft_random_masking":
            ratio = _uniform(gen, *algo.mask_ratio)
            rows.append(_masked_row(seq, _bernoulli(gen, L, ratio, True), 1.0 / ratio, cfg, B, i))
        elif algo.name == "sft_semi_ar":  # [clean | noisy copies], an independent mask ratio per block
            P = seq.prompt_len
            copies = []
            for b in range(P // B, (P + L - 1) // B + 1):
                span = range(b * B, min((b + 1) * B, len(seq.ids)))
                ratio = _uniform(gen, *algo.mask_ratio)
                # Response and the EOS fill after it: the sampler needs the model to fill a block's
                # slots after EOS too, and to do so confidently.
                resp = [p for p in span if p >= P]
                hidden = dict(zip(resp, _bernoulli(gen, len(resp), ratio, True)))
                copies.append((b, [not hidden.get(p, False) for p in span],
                               [1.0 / ratio if hidden.get(p, False) else None for p in span]))
            rows.append(copy_row(seq, B, copies, mask_id, i))
        else:
            raise ValueError(f"algo.name={algo.name!r} is not an SFT objective")
    return rows


def sft_trajectory(prompt_ids: list[int], response_ids: list[int], block_size: int, eos_id: int) -> Trajectory:
    """A (prompt, response) pair as a trajectory whose last block is filled up with EOS."""
    fill = -(len(prompt_ids) + len(response_ids)) % block_size
    n = len(response_ids)
    return Trajectory(prompt_ids=list(prompt_ids), response_ids=list(response_ids), step_map=[1] * n,
                      logprobs=[0.0] * n, entropies=[0.0] * n, block_size=block_size, finish_reason="eos",
                      num_forwards=1, tail_ids=[eos_id] * fill, tail_steps=[1] * fill)
