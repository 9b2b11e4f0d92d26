"""Block-diffusion sampler with an exact, fused KV cache (DESIGN §5).

Canvas layout: row i is left-padded so that all rows share column boundaries. For block-causal
models the padding is a whole number of blocks, so blocks stay aligned to absolute positions
counted from each row's first prompt token (as SDAR was trained) and a prompt tail shares the
first generated block. Full-attention models (LLaDA/Dream) pad to the longest prompt and split
the generation region into semi-AR blocks.

Cache (block-causal): committed blocks never change, so their K/V are exact. A finished block's
K/V are written by the *first pass of the next block* (query = [finished block | new block]),
which saves the extra forward per block that the reference engine spends, and the prompt's
whole blocks are prefilled by the first pass of the first block the same way.
Cache (full attention): a Fast-dLLM prefix cache, refreshed at each block start (approximate).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from models.masks import column_mask
from models.transformer import DiffusionLM

from .params import SamplingParams
from .rng import uniforms
from .strategies import choose_commits, static_schedule
from .token_sampling import sample_candidates
from .trajectory import Trajectory


@dataclass
class _Canvas:
    tokens: torch.Tensor     # [N, C] ids (mask id where not yet committed)
    positions: torch.Tensor  # [N, C] position ids (column - padding)
    valid: torch.Tensor      # [N, C] False on left padding
    steps: torch.Tensor      # [N, C] 1-based commit pass, 0 for prompt/padding/uncommitted
    logprobs: torch.Tensor   # [N, C]
    entropy: torch.Tensor    # [N, C]
    start: torch.Tensor      # [N] column of the first response token
    gen_start: int           # column where the first generated block starts
    num_blocks: int


def validate_prompts(model: DiffusionLM, prompts: list[list[int]], params: SamplingParams) -> None:
    cfg = model.config
    if not prompts:
        raise ValueError("generate() got no prompts")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty: a prompt needs at least one token")
        if len(p) + params.max_new_tokens + params.block_size > cfg.max_position_embeddings:
            raise ValueError(
                f"prompt {i} has {len(p)} tokens; with max_new_tokens={params.max_new_tokens} and "
                f"block_size={params.block_size} it exceeds the model context "
                f"(max_position_embeddings={cfg.max_position_embeddings})")
        if cfg.mask_token_id in p:
            raise ValueError(f"prompt {i} contains the mask token id {cfg.mask_token_id}")
    if cfg.attention == "full" and params.max_new_tokens % params.block_size:
        raise ValueError(
            f"rollout.block_size={params.block_size} must divide max_new_tokens={params.max_new_tokens} "
            f"for full-attention ({cfg.family}) semi-AR decoding")


def _layout(model: DiffusionLM, prompts: list[list[int]], params: SamplingParams) -> _Canvas:
    cfg, B = model.config, params.block_size
    lengths = torch.tensor([len(p) for p in prompts])
    if cfg.attention == "block_causal":
        full_blocks = lengths // B
        pad = (full_blocks.max() - full_blocks) * B
        gen_start = int(full_blocks.max()) * B
        num_blocks = int(((lengths % B + params.max_new_tokens + B - 1) // B).max())
    else:
        pad = lengths.max() - lengths
        gen_start = int(lengths.max())
        num_blocks = params.max_new_tokens // B
    n, c = len(prompts), gen_start + num_blocks * B
    cols = torch.arange(c)
    tokens = torch.full((n, c), cfg.mask_token_id, dtype=torch.long)
    for i, p in enumerate(prompts):
        tokens[i, :pad[i]] = cfg.pad_token_id
        tokens[i, pad[i]:pad[i] + len(p)] = torch.tensor(p)
    return _Canvas(
        tokens=tokens, positions=(cols[None] - pad[:, None]).clamp(min=0), valid=cols[None] >= pad[:, None],
        steps=torch.zeros((n, c), dtype=torch.long), logprobs=torch.zeros((n, c)),
        entropy=torch.zeros((n, c)), start=pad + lengths, gen_start=gen_start, num_blocks=num_blocks)


@torch.no_grad()
def generate(model: DiffusionLM, prompts: list[list[int]], params: SamplingParams,
             seeds: list[int] | None = None) -> list[Trajectory]:
    """Sample one response per prompt. `seeds` (one 32-bit int per row) fix each row's randomness
    independently of the batch; default: the row index mixed with params.seed."""
    validate_prompts(model, prompts, params)
    cfg, B, K = model.config, params.block_size, params.steps_per_block
    device = model.embed_tokens.weight.device
    canvas = _layout(model, prompts, params)
    n = len(prompts)
    row_seed = torch.tensor(seeds if seeds is not None else [params.seed * 1000003 + i for i in range(n)])
    block_mask = B if cfg.attention == "block_causal" else None
    shift = int(cfg.shift_logits)
    stop_ids = torch.tensor([] if params.ignore_eos else
                            sorted({cfg.eos_token_id, *cfg.stop_token_ids, *params.stop_token_ids}), dtype=torch.long)
    row_steps = torch.zeros(n, dtype=torch.long)
    results: list[Trajectory | None] = [None] * n
    active = torch.arange(n)
    cache = model.new_kv_cache(n, canvas.tokens.shape[1]) if params.use_cache else None

    for blk in range(canvas.num_blocks):
        c0 = canvas.gen_start + blk * B
        c1 = c0 + B
        q_end = c1 if block_mask else canvas.tokens.shape[1]
        masked = canvas.tokens[active, c0:c1] == cfg.mask_token_id
        schedule = static_schedule(masked.sum(1), K)
        if cache is not None and block_mask is None:
            cache.reset()  # full attention: the prefix's K/V change with every new block
        for k in range(K):
            working = masked.any(1)
            if not working.any():
                break
            q0 = cache.length if cache is not None else 0
            write = max(c0 - shift - q0, 0) if cache is not None else 0
            q_cols, k_cols = torch.arange(q0, q_end), torch.arange(q_end)
            attn = column_mask(q_cols, k_cols, canvas.valid[active, :q_end], block_mask)
            logit_slots = torch.zeros(len(active), q_end - q0, dtype=torch.bool)
            logit_slots[:, c0 - shift - q0:c1 - shift - q0] = masked
            logits = model(canvas.tokens[active, q0:q_end].to(device), canvas.positions[active, q0:q_end].to(device),
                           attn.to(device), cache, write, logit_slots.to(device)).cpu()

            rows, slots = masked.nonzero(as_tuple=True)
            step_now = row_steps[active] + 1
            pos = canvas.positions[active, c0:c1]
            cand = sample_candidates(
                logits, uniforms(row_seed[active][rows], pos[rows, slots], step_now[rows], 0),
                params.temperature, params.top_k, params.top_p, cfg.mask_token_id)
            confidence = torch.zeros(masked.shape)
            confidence[rows, slots] = cand.confidence
            entropy = torch.zeros(masked.shape)
            entropy[rows, slots] = cand.entropy
            rand = (uniforms(row_seed[active][:, None], pos, step_now[:, None], 1)  # only random reads it
                    if params.strategy == "random" else None)
            commit = choose_commits(params, masked, confidence, entropy, rand, schedule[:, k], k == K - 1)

            picked = commit[rows, slots]
            r_idx, s_idx = active[rows[picked]], c0 + slots[picked]
            canvas.tokens[r_idx, s_idx] = cand.tokens[picked]
            canvas.steps[r_idx, s_idx] = step_now[rows[picked]]
            canvas.logprobs[r_idx, s_idx] = cand.logprobs[picked]
            canvas.entropy[r_idx, s_idx] = cand.entropy[picked]
            row_steps[active[working]] += 1
            masked &= ~commit

        done = _finish_rows(canvas, active, c1, stop_ids, params, prompts, row_steps, results, cfg.attention,
                            cfg.eos_token_id)
        if done.any():
            keep = ~done
            active = active[keep]
            if cache is not None:
                cache.select_rows(keep.nonzero(as_tuple=True)[0].to(device))
        if len(active) == 0:
            break
    return [t for t in results if t is not None]


def _finish_rows(canvas: _Canvas, active: torch.Tensor, c1: int, stop_ids: torch.Tensor,
                 params: SamplingParams, prompts: list[list[int]], row_steps: torch.Tensor,
                 results: list[Trajectory | None], attention: str, eos_id: int) -> torch.Tensor:
    """Close every active row whose response now contains a stop token or reached its budget."""
    done = torch.zeros(len(active), dtype=torch.bool)
    for j, i in enumerate(active.tolist()):
        start = int(canvas.start[i])
        response = canvas.tokens[i, start:c1]
        hits = torch.isin(response, stop_ids).nonzero()
        if len(hits) and int(hits[0]) < params.max_new_tokens:
            end = start + int(hits[0]) + 1
            reason = "eos" if int(canvas.tokens[i, end - 1]) == eos_id else "stop"
        elif c1 - start >= params.max_new_tokens:
            end, reason = start + params.max_new_tokens, "length"
        else:
            continue
        done[j] = True
        results[i] = Trajectory(
            prompt_ids=list(prompts[i]),
            response_ids=canvas.tokens[i, start:end].tolist(),
            step_map=canvas.steps[i, start:end].tolist(),
            logprobs=canvas.logprobs[i, start:end].tolist(),
            entropies=canvas.entropy[i, start:end].tolist(),
            block_size=params.block_size, finish_reason=reason, num_forwards=int(row_steps[i]),
            tail_ids=canvas.tokens[i, end:c1].tolist(), tail_steps=canvas.steps[i, end:c1].tolist(),
            canvas_len=params.max_new_tokens if attention == "full" else 0)
    return done
