"""Learner figures, one JSON line, all measured in this run:

- packed TraceRL rows vs one forward per (block, step) state (`packed_over_bruteforce`), with
  `max_abs_logprob_diff_vs_sampler` checking the rows against the sampler's recorded log-probs;
- `packed_rounds_over_per_round`: learner tokens/s of a PPO forward+backward over the same
  trajectories, rounds packed on one clean copy vs one row per round (B = 4, K = 4), fastest of
  --repeats passes of each, taking turns;
- `row_build_s`: TraceRL rows of 256 responses × 2k tokens, tensor builder vs the Python one of
  commit add483c (tests/learner/python_rows.py, kept verbatim as the test oracle), fastest of
  --repeats runs of each, taking turns (a full garbage collection, which the Python builder
  triggers many times, can land in either);
- `policy_step_matmul_share`: one TraceRL policy step (old log-probs, PPO forward + backward, AdamW)
  on 1k-token responses of the sampler bench's 29.4M-parameter shape (B = K = 4, rounds packed),
  FLOPs per second (bench/work_counter.py: linear layers, attention over the pairs the slot mask
  lets through, forward with gradients counted three times) over the matmul rate measured in the
  same run (bench/common.py), fastest of --repeats steps;
- `step_peak_mb`: peak resident memory of one policy step (old log-probs, PPO loss, backward,
  AdamW) on one K = 4 trajectory per response length, a narrow model with the 151,936 vocabulary,
  each length in a fresh process; `mem_growth_exponent`: slope of log memory against log length
  between the 2nd and 4th length (2k → 8k).

    python bench/learner.py          # full figures (~5 min on 2 lightly loaded cores)
    python bench/learner.py --quick  # smaller sizes, same figures
    python bench/learner.py --parts rows,memory  # a subset
    python bench/learner.py --parts roofline
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]  # the oracles under tests/ import their siblings as pytest does

from bench.common import bench_parser, best_of, emit, fastest, matmul_rate, synthetic  # noqa: E402
from bench.work_counter import WorkCounter, all_pairs  # noqa: E402
from learner.algo_config import AlgoConfig  # noqa: E402
from learner.batching import micro_batches  # noqa: E402
from learner.engine import TrainEngine  # noqa: E402
from learner.engine_config import EngineConfig  # noqa: E402
from learner.logprobs import token_logprobs  # noqa: E402
from learner.losses import ppo_clip  # noqa: E402
from learner.policy_update import PolicyUpdater  # noqa: E402
from learner.rows import trace_rows, trace_rows_batch  # noqa: E402
from models.config import ModelConfig  # noqa: E402
from models.slot_mask import SlotMask  # noqa: E402
from models.tiny import synthetic_config  # noqa: E402
from models.transformer import DiffusionLM  # noqa: E402
from rollout.params import SamplingParams  # noqa: E402
from rollout.sampler import generate  # noqa: E402
from rollout.trajectory import Trajectory  # noqa: E402
from tests.learner import python_rows  # noqa: E402
from tests.learner.bruteforce import state_logprobs  # noqa: E402


def model_config(vocab: int, hidden: int, layers: int, block: int, positions: int) -> ModelConfig:
    return synthetic_config(vocab, hidden_size=hidden, intermediate_size=3 * hidden, num_layers=layers,
                            num_heads=max(hidden // 32, 2), num_kv_heads=max(hidden // 64, 1), head_dim=32,
                            block_size=block, max_position_embeddings=positions)


def ppo_pass(model: DiffusionLM, trajs: list[Trajectory], pack: int | None, budget: int,
             check: bool = False) -> tuple[float, float]:
    """Seconds of forward + backward over every row, and the max |learner - sampler| log-prob."""
    adv = torch.linspace(-1, 1, len(trajs))
    cfg, worst = model.config, 0.0
    start = time.perf_counter()
    rows = [r for i, t in enumerate(trajs) for r in trace_rows(t, i, cfg.attention, 1, cfg.mask_token_id, 0, pack)]
    for mb in micro_batches(rows, budget, cfg.pad_token_id):
        logp, _ = token_logprobs(model, mb, cfg.mask_token_id)
        rec = torch.tensor([trajs[i].logprobs[j] for i, j in zip(mb.traj_index.tolist(), mb.token_index.tolist())])
        if check:
            worst = max(worst, float((logp.detach() - rec).abs().max()))
        ppo_clip(logp, rec, adv[mb.traj_index], 0.2, 0.2)[0].sum().backward()
    return time.perf_counter() - start, worst


def vs_bruteforce(args) -> dict:
    torch.manual_seed(0)
    cfg = model_config(1000, args.hidden, args.layers, 4, 2048)
    model = DiffusionLM(cfg)
    prompts = torch.randint(1, 998, (args.responses, 64), generator=torch.Generator().manual_seed(1))
    trajs = generate(model.eval(), prompts.tolist(),
                     SamplingParams(block_size=4, steps_per_block=4, max_new_tokens=args.new, ignore_eos=True,
                                    strategy="dynamic", threshold=0.05))
    model.train()
    tokens = sum(len(t.response_ids) for t in trajs)
    state_logprobs(model, trajs[0], cfg.mask_token_id)[:4].sum().backward()  # warm-up
    model.zero_grad()
    packed_s, worst = ppo_pass(model, trajs, 16384, 16384, check=True)
    start = time.perf_counter()
    for i, t in enumerate(trajs):
        logp = state_logprobs(model, t, cfg.mask_token_id)
        rec = torch.tensor(t.logprobs)
        ppo_clip(logp, rec, torch.full_like(rec, i / len(trajs)), 0.2, 0.2)[0].sum().backward()
    brute_s = time.perf_counter() - start
    return {"packed_over_bruteforce": round(brute_s / packed_s, 2), "max_abs_logprob_diff_vs_sampler": worst,
            "bruteforce_setup": {"responses": len(trajs), "response_len": args.new,
                                 "tokens_per_forward_sampled": round(tokens / sum(t.num_forwards for t in trajs), 3),
                                 "seconds": {"packed": round(packed_s, 2), "bruteforce": round(brute_s, 2)}}}


def packed_vs_per_round(args) -> dict:
    torch.manual_seed(0)
    cfg = model_config(1000, 128, 2, 4, 8192)
    model = DiffusionLM(cfg).train()
    trajs = synthetic(args.pack_responses, 64, args.pack_len, 4, 1000, seed=2)
    tokens = sum(len(t.response_ids) for t in trajs)
    ppo_pass(model, trajs[:1], None, 16384)  # warm-up
    best, _ = fastest({"per_round": lambda: ppo_pass(model, trajs, None, 16384),
                       "packed": lambda: ppo_pass(model, trajs, 16384, 16384)}, args.repeats)
    per_round_s, packed_s = best["per_round"], best["packed"]
    return {"packed_rounds_over_per_round": round(per_round_s / packed_s, 2),
            "packed_setup": {"responses": len(trajs), "response_len": args.pack_len, "block": 4, "rounds": 4,
                             "hidden": 128, "layers": 2, "vocab": 1000, "token_budget": 16384, "repeats": args.repeats,
                             "tokens_per_s": {"packed": round(tokens / packed_s, 1),
                                              "per_round": round(tokens / per_round_s, 1)}}}


def row_build(args) -> dict:
    trajs = synthetic(args.build_responses, 64, args.build_len, 4, 151936, seed=3)
    trace_rows_batch(trajs[:2], [0, 1], "block_causal", 1, 0, 0, 16384)  # warm-up
    best, out = fastest({"tensor": lambda: trace_rows_batch(trajs, list(range(len(trajs))), "block_causal", 1, 0, 0,
                                                            16384),
                         "python": lambda: len([r for i, t in enumerate(trajs)  # rows of lists: GBs, not kept
                                                for r in python_rows.trace_rows(t, i, "block_causal", 1, 0, 0)])},
                        args.repeats)
    start = time.perf_counter()
    micro_batches(out["tensor"], 65536, 0)
    collate_s = time.perf_counter() - start
    return {"row_build_s": round(best["tensor"], 3), "row_build_s_python_add483c": round(best["python"], 2),
            "row_build_speedup": round(best["python"] / best["tensor"], 1), "micro_batches_s": round(collate_s, 3),
            "row_build_setup": {"responses": len(trajs), "response_len": args.build_len, "repeats": args.repeats,
                                "rows": {"tensor_packed": len(out["tensor"]), "python_per_round": out["python"]}}}


def visible_pairs(mask: object, q: torch.Tensor, k: torch.Tensor) -> int:
    """(query, key) pairs a slot mask lets through (what attention must compute); others: all."""
    return int(mask.rows().sum()) if isinstance(mask, SlotMask) else all_pairs(mask, q, k)


def policy_roofline(args) -> dict:
    torch.manual_seed(0)
    K, prompt, length, vocab = 4, 128, args.roof_len, 4096
    cfg = synthetic_config(vocab, hidden_size=512, intermediate_size=1536, num_layers=8, num_heads=8, num_kv_heads=4,
                           head_dim=64, block_size=4, max_position_embeddings=prompt + length + 8)
    updater = PolicyUpdater(TrainEngine(DiffusionLM(cfg), EngineConfig(lr=1e-4)),
                            AlgoConfig(name="tracerl", token_budget=prompt + (K + 1) * (length + 4)), cfg)
    trajs = synthetic(args.roof_responses, prompt, length, 4, vocab, seed=6)
    adv = torch.linspace(-1, 1, len(trajs)).tolist()
    updater.rl_step(synthetic(1, prompt, 64, 4, vocab, seed=7), [1.0], 0)  # warm-up: optimizer state exists
    seconds = best_of(args.repeats, lambda: updater.rl_step(trajs, adv, 1))
    with WorkCounter(updater.engine.module, visible_pairs) as work:
        updater.rl_step(trajs, adv, 2)
    rate = matmul_rate(torch.device("cpu"), torch.float32)
    params = sum(p.numel() for p in updater.engine.module.parameters())
    return {"policy_step_matmul_share": round(work.flops / seconds / rate, 3),
            "policy_step_gflops_per_s": round(work.flops / seconds / 1e9, 1),
            "policy_step_setup": {"responses": len(trajs), "response_len": length, "prompt": prompt, "block": 4,
                                  "rounds": K, "params_m": round(params / 1e6, 1),
                                  "tflop": round(work.flops / 1e12, 3), "seconds": round(seconds, 2),
                                  "matmul_gflops_per_s": round(rate / 1e9, 1), "repeats": args.repeats}}


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def memory_child(length: int, hidden: int) -> dict:
    """One policy step after a short warm-up step (optimizer state and allocator pools exist)."""
    torch.manual_seed(0)
    K, prompt = 4, 64
    cfg = model_config(151936, hidden, 2, 4, prompt + length + 8)
    budget = prompt + (K + 1) * (length + 4)  # the trajectory's packed row in one micro-batch
    updater = PolicyUpdater(TrainEngine(DiffusionLM(cfg), EngineConfig(lr=1e-4)),
                            AlgoConfig(name="tracerl", token_budget=budget), cfg)
    updater.rl_step(synthetic(1, prompt, 64, 4, 151936, seed=4), [1.0], 0)
    traj = synthetic(1, prompt, length, 4, 151936, seed=5)
    before = _rss_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
        f.write("5")
    start = time.perf_counter()
    updater.rl_step(traj, [1.0], 1)
    return {"peak_mb": round((_rss_kb("VmHWM") - before) / 1024, 1), "seconds": round(time.perf_counter() - start, 1)}


def memory(args) -> dict:
    peaks, seconds = {}, {}
    for n in args.mem_lengths:
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(n), "--mem-hidden", str(args.mem_hidden)],
                             capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": ROOT})
        fig = json.loads(out.stdout.strip().splitlines()[-1])
        peaks[n], seconds[n] = fig["peak_mb"], fig["seconds"]
    a, b = args.mem_lengths[1], args.mem_lengths[3]
    return {"step_peak_mb": peaks, "mem_growth_exponent": round(math.log(peaks[b] / peaks[a]) / math.log(b / a), 3),
            "mem_growth_between": [a, b], "mem_step_seconds": seconds,
            "mem_setup": {"vocab": 151936, "hidden": args.mem_hidden, "layers": 2, "block": 4, "rounds": 4,
                          "layout": "packed, one row per step"}}


def main() -> None:
    ap = bench_parser(repeats=3, repeats_help="rows, packing: fastest of this many runs of each side, taking turns")
    ap.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--mem-hidden", type=int, default=64)
    ap.add_argument("--parts", default="rows,packing,bruteforce,memory,roofline", help="comma-separated subset to run")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.memory_child:
        emit(memory_child(args.memory_child, args.mem_hidden))
        return
    full = dict(responses=8, new=256, hidden=256, layers=4, pack_responses=4, pack_len=1024, build_responses=256,
                build_len=2048, mem_lengths=[1024, 2048, 4096, 8192], roof_len=1024, roof_responses=2)
    quick = dict(responses=4, new=64, hidden=128, layers=2, pack_responses=2, pack_len=512, build_responses=32,
                 build_len=2048, mem_lengths=[256, 512, 1024, 2048], roof_len=256, roof_responses=1)
    for k, v in (quick if args.quick else full).items():
        setattr(args, k, v)
    figures = {"quick": args.quick}
    parts = {"rows": row_build, "packing": packed_vs_per_round, "bruteforce": vs_bruteforce, "memory": memory,
             "roofline": policy_roofline}
    for name in args.parts.split(","):
        figures |= parts[name](args)
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    emit(figures)


if __name__ == "__main__":
    main()
