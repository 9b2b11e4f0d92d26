"""TraceRL learner throughput: packed rows vs one forward per (block, step) state.

Prints one JSON line. Both score the same sampled trajectories with the same PPO loss and run
forward + backward; `max_abs_logprob_diff_vs_sampler` checks the packed rows against the
sampler's recorded log-probs on the way.

    python bench/learner.py          # B = 4, K = 4, 256-token responses
    python bench/learner.py --quick
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from learner.batching import micro_batches  # noqa: E402
from learner.bruteforce import state_logprobs  # noqa: E402
from learner.logprobs import token_logprobs  # noqa: E402
from learner.losses import ppo_clip  # noqa: E402
from learner.rows import trace_rows  # noqa: E402
from models.config import ModelConfig  # noqa: E402
from models.transformer import DiffusionLM  # noqa: E402
from rollout.params import SamplingParams  # noqa: E402
from rollout.sampler import generate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--responses", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--block", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--token-budget", type=int, default=8192)
    args = ap.parse_args()
    if args.quick:
        args.responses, args.new, args.hidden, args.layers = 4, 64, 128, 2
    torch.set_num_threads(2)
    torch.manual_seed(0)
    vocab = 1000
    cfg = ModelConfig(family="sdar", vocab_size=vocab, hidden_size=args.hidden, intermediate_size=3 * args.hidden,
                      num_layers=args.layers, num_heads=args.hidden // 64, num_kv_heads=max(args.hidden // 128, 1),
                      head_dim=64, block_size=args.block, mask_token_id=vocab - 1, eos_token_id=vocab - 2,
                      pad_token_id=0, max_position_embeddings=2048)
    model = DiffusionLM(cfg)
    prompts = torch.randint(1, vocab - 2, (args.responses, args.prompt), generator=torch.Generator().manual_seed(1))
    trajs = generate(model.eval(), prompts.tolist(),
                     SamplingParams(block_size=args.block, steps_per_block=args.steps, max_new_tokens=args.new,
                                    ignore_eos=True, strategy="dynamic", threshold=0.05))
    model.train()
    adv = torch.linspace(-1, 1, len(trajs)).tolist()
    tokens = sum(len(t.response_ids) for t in trajs)

    # Warm-up (allocator, autograd engine, thread pool) so neither timed path pays first-call costs.
    state_logprobs(model, trajs[0], cfg.mask_token_id)[:4].sum().backward()
    model.zero_grad()

    start = time.perf_counter()
    rows = [r for i, t in enumerate(trajs) for r in trace_rows(t, i, cfg.attention, 1, cfg.mask_token_id)]
    worst = 0.0
    for mb in micro_batches(rows, args.token_budget, cfg.pad_token_id):
        logp, _ = token_logprobs(model, mb, cfg.mask_token_id)
        rec = torch.tensor([trajs[i].logprobs[j] for i, j in zip(mb.traj_index.tolist(), mb.token_index.tolist())])
        worst = max(worst, float((logp.detach() - rec).abs().max()))
        a = torch.tensor([adv[i] for i in mb.traj_index.tolist()])
        ppo_clip(logp, rec, a, 0.2, 0.2)[0].sum().backward()
    packed_s = time.perf_counter() - start

    model.zero_grad()
    start = time.perf_counter()
    for i, t in enumerate(trajs):
        logp = state_logprobs(model, t, cfg.mask_token_id)
        rec = torch.tensor(t.logprobs)
        ppo_clip(logp, rec, torch.full_like(rec, adv[i]), 0.2, 0.2)[0].sum().backward()
    brute_s = time.perf_counter() - start

    print(json.dumps({
        "rows_per_response": round(len(rows) / len(trajs), 3),
        "packed_tokens_per_s": round(tokens / packed_s, 1),
        "bruteforce_tokens_per_s": round(tokens / brute_s, 1),
        "packed_over_bruteforce": round(brute_s / packed_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "max_abs_logprob_diff_vs_sampler": worst,
        "tokens_per_forward_sampled": round(tokens / sum(t.num_forwards for t in trajs), 3),
        "responses": len(trajs), "prompt": args.prompt, "response_len": args.new, "block": args.block,
        "steps_per_block": args.steps, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "seconds": {"packed": round(packed_s, 2), "bruteforce": round(brute_s, 2)},
    }))


if __name__ == "__main__":
    main()
