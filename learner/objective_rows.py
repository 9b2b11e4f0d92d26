"""Which rows each objective trains on (DESIGN §6.1, §6.3), built from the two layouts in rows.py.

Row weights carry the objective's own per-token factor (AGRPO's importance weight, coupled-GRPO's
1/t, MDM's 1/t); step normalisation is applied on top by `norm_weights` in learner/policy_update.py.
"""
from __future__ import annotations

import torch

from models.config import ModelConfig
from rollout.trajectory import Trajectory

from .algo_config import AlgoConfig
from .rows import Copies, Row, Sequence, copy_row, flat_row, round_rows, state_copies, state_row, trace_rows_batch

NAN = float("nan")


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def _bernoulli(gen: torch.Generator, n: int, p: float, at_least_one: bool) -> torch.Tensor:
    draws = torch.rand(n, generator=gen) < p
    if at_least_one and n and not bool(draws.any()):
        draws[int(torch.randint(n, (), generator=gen))] = True
    return draws


def _masked_row(seq: Sequence, masked: torch.Tensor, weight: float, cfg: ModelConfig, block_size: int,
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


def agrpo_rows(t: Trajectory, i: int, algo: AlgoConfig, cfg: ModelConfig, gen: torch.Generator,
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
    picks = torch.searchsorted(q.cumsum(0), (torch.arange(M, dtype=torch.float64) + offset) / M).clamp(max=len(steps) - 1)
    weight = torch.zeros(len(steps), dtype=torch.float64).index_add_(0, picks, 1.0 / (M * q[picks]))
    drawn = torch.zeros(len(steps), dtype=torch.bool)
    drawn[picks] = True
    if cfg.attention != "block_causal":
        return [state_row(seq, [int(steps[k])], torch.full((len(seq.ids),), float(weight[k])),
                          cfg.mask_token_id, int(cfg.shift_logits), i, r)
                for r, k in enumerate(drawn.nonzero().squeeze(1).tolist())]
    # Drawn steps of different blocks share a round; steps of the same block need separate rounds.
    ((copies, sizes),) = state_copies([seq], t.block_size, 1, [weight[where].float()], pack_budget is not None,
                                      [drawn[where]])
    return round_rows(seq, t.block_size, copies, sizes, cfg.mask_token_id, i, pack_budget)


def rl_rows(trajs: list[Trajectory], algo: AlgoConfig, cfg: ModelConfig, gen: torch.Generator,
            pack_budget: int | None = None) -> list[Row]:
    """Rows for one pass of an RL objective. `gen` draws the baselines' random masks (a fresh draw
    per call, i.e. per inner iteration μ, as d1 prescribes). pack_budget: TraceRL/AGRPO rounds
    packed on one clean copy up to that many slots per row (None: one row per round)."""
    rows: list[Row] = []
    shift, mask_id = int(cfg.shift_logits), cfg.mask_token_id
    if algo.name in ("tracerl", "tracerl_value"):  # every trajectory's rows in one set of tensor ops
        kept = [i for i, t in enumerate(trajs) if t.response_ids]
        return trace_rows_batch([trajs[i] for i in kept], kept, cfg.attention, algo.shrink, mask_id, shift,
                                pack_budget)
    for i, t in enumerate(trajs):
        if not t.response_ids:
            continue
        seq, L, P, B = Sequence.of(t, mask_id), len(t.response_ids), len(t.prompt_ids), t.block_size
        if algo.name == "agrpo":
            rows += agrpo_rows(t, i, algo, cfg, gen, pack_budget)
        elif algo.name == "diffu_grpo":  # completion fully masked, prompt tokens masked with p
            rows.append(_masked_row(seq, torch.ones(L, dtype=torch.bool), 1.0, cfg, B, i,
                                    prompt_masked=_bernoulli(gen, P, algo.d1_prompt_mask_p, False)))
        elif algo.name == "coupled_grpo":  # mask M_t and its complement: each token scored once
            ratio = _uniform(gen, *algo.coupled_t)
            masked = _bernoulli(gen, L, ratio, False)
            rows.append(_masked_row(seq, masked, 1.0 / ratio, cfg, B, i, 0))
            rows.append(_masked_row(seq, ~masked, 1.0 / (1.0 - ratio), cfg, B, i, 1))
        elif algo.name == "random_masking":
            rows.append(_masked_row(seq, _bernoulli(gen, L, _uniform(gen, *algo.mask_ratio), True), 1.0, cfg, B, i))
        else:
            raise ValueError(f"algo.name={algo.name!r} is not an RL objective")
    return [r for r in rows if len(r.targets)]


def sft_rows(trajs: list[Trajectory], algo: AlgoConfig, cfg: ModelConfig, gen: torch.Generator,
             pack_budget: int | None = None) -> list[Row]:
    """SFT rows; plain (prompt, response) pairs come wrapped by `sft_trajectory`."""
    rows: list[Row] = []
    mask_id = cfg.mask_token_id
    if algo.name == "sft_trace":
        kept = [i for i, t in enumerate(trajs) if t.response_ids]
        return trace_rows_batch([trajs[i] for i in kept], kept, cfg.attention, algo.shrink, mask_id,
                                int(cfg.shift_logits), pack_budget)
    for i, t in enumerate(trajs):
        if not t.response_ids:
            continue
        seq, L, B = Sequence.of(t, mask_id), len(t.response_ids), t.block_size
        if algo.name == "sft_random_masking":
            ratio = _uniform(gen, *algo.mask_ratio)
            rows.append(_masked_row(seq, _bernoulli(gen, L, ratio, True), 1.0 / ratio, cfg, B, i))
        elif algo.name == "sft_semi_ar":  # [clean | noisy copies], an independent mask ratio per block
            P, N = seq.prompt_len, len(seq.ids)
            copies = []
            for b in range(P // B, (P + L - 1) // B + 1):
                span = torch.arange(b * B, min((b + 1) * B, N))
                ratio = _uniform(gen, *algo.mask_ratio)
                # Response and the EOS fill after it: the sampler needs the model to fill a block's
                # slots after EOS too, and to do so confidently.
                resp = span >= P
                hidden = torch.zeros(len(span), dtype=torch.bool)
                hidden[resp] = _bernoulli(gen, int(resp.sum()), ratio, True)
                copies.append(Copies(span, torch.ones_like(span), ~hidden, torch.where(hidden, 1.0 / ratio, NAN)))
            rows.append(copy_row(seq, B, Copies.cat(copies), mask_id, i))
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
