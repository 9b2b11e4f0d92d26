"""The sampler against the machine's own limits (bench/sampler.py `--batches`, and its cached run).

Per configuration (strategy × batch): tokens/s (fastest of --repeats, taking turns with any
`--baseline` checkouts run in subprocesses on the same model and prompts), the FLOPs and bytes one
decode does (bench/work_counter.py: every linear layer and attention call, prefill included) as
GFLOP/s and GB/s with their share of the matmul rate and read bandwidth measured in the same run
(bench/common.py), and a breakdown of the decode's time by phase from one instrumented run:

- attention: q/k/v/o projections, rotary, layout; attention_kernel: the masked attention itself;
- mlp; vocab_projection: the masked slots' logits; cache_writes: KVCache.extend;
- norms_embedding: the rest of the transformer body (embedding, RMS norms, residuals);
- sampling_commit: everything else of a pass (query plan, candidates, the strategy, commits);
- status_read: the block-end status and its host read; host: what is left (the engine's loop,
  admission, planning, emitting the trajectories).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import models.transformer as transformer
from bench.common import matmul_rate, read_bandwidth
from bench.shapes import random_prompts
from bench.work_counter import PhaseClock, WorkCounter
from models.kv_cache import KVCache
from models.transformer import DiffusionLM
from rollout.params import SamplingParams
from rollout.runner import PassRunner
from rollout.sampler import generate
from rollout.stopping import StopRule


def limits(model: DiffusionLM, quick: bool) -> dict[str, float]:
    """The machine's matmul rate (the model's dtype), its memory read bandwidth, and the read rate of
    a buffer as large as the weights one pass streams (every parameter but the embedding table,
    which is only gathered): what the caches give when that working set stays in them."""
    p = model.embed_tokens.weight
    weights = sum(x.numel() * x.element_size() for x in model.parameters()) - p.numel() * p.element_size()
    return {"matmul_flops_per_s": matmul_rate(p.device, p.dtype, 1024 if quick else 2048),
            "read_bytes_per_s": read_bandwidth(p.device),
            "weights_sized_read_bytes_per_s": read_bandwidth(p.device, weights)}


def _phases(model: DiffusionLM) -> dict[str, list[tuple[Any, str]]]:
    return {"attention": [(transformer.Attention, "forward")], "attention_kernel": [(transformer, "attend")],
            "mlp": [(transformer.MLP, "forward")], "vocab_projection": [(model.lm_head, "forward")],
            "cache_writes": [(KVCache, "extend")], "norms_embedding": [(DiffusionLM, "hidden_states")],
            "sampling_commit": [(PassRunner, "run")], "status_read": [(StopRule, "status")]}


def decode_work(model: DiffusionLM, prompts: list[list[int]], params: SamplingParams) -> dict[str, Any]:
    """FLOPs, bytes and the phase breakdown (shares of the instrumented run's time) of one decode,
    counted eager (compiled code calls no Python forward; the useful work is the same)."""
    clock = PhaseClock()
    with WorkCounter(model) as work, clock.timing(_phases(model)):
        start = time.perf_counter()
        generate(model, prompts, params.model_copy(update={"compile": False}))
        total = time.perf_counter() - start
    clock.seconds["host"] = total - sum(clock.seconds.values())
    return {"flops": work.flops, "bytes": work.bytes,
            "phases": {k: round(v / total, 3) for k, v in sorted(clock.seconds.items(), key=lambda kv: -kv[1])}}


def roofline(work: dict[str, Any], seconds: float, tokens: int, lim: dict[str, float]) -> dict[str, Any]:
    flops_s, bytes_s = work["flops"] / seconds, work["bytes"] / seconds
    return {"gflops_per_s": round(flops_s / 1e9, 1), "matmul_share": round(flops_s / lim["matmul_flops_per_s"], 3),
            "gbytes_per_s": round(bytes_s / 1e9, 2), "bandwidth_share": round(bytes_s / lim["read_bytes_per_s"], 3),
            "mflop_per_token": round(work["flops"] / tokens / 1e6, 1),
            "bandwidth_bound_tokens_per_s": round(tokens * lim["read_bytes_per_s"] / work["bytes"], 1),
            "weights_sized_bandwidth_share": round(bytes_s / lim["weights_sized_read_bytes_per_s"], 3),
            "phases": work["phases"]}


# Runs in a checkout of another commit (its own modules): same model, prompts and timing rule.
_BASELINE = """
import json, sys, time, torch
from bench.sampler import build, random_prompts
from rollout.params import SamplingParams
from rollout.sampler import generate
a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])
model = build(a["hidden"], a["layers"], a["vocab"], a["block"])
base = SamplingParams(**a["params"])
generate(model, [[1] * 8] * 2, base.model_copy(update={"max_new_tokens": 8}))
out = {}
for strategy, b in a["configs"]:
    prompts = random_prompts(model.config, b, a["prompt"])
    start = time.perf_counter()
    trajs = generate(model, prompts, base.model_copy(update={"strategy": strategy}))
    out[f"{strategy}_b{b}"] = sum(len(t.response_ids) for t in trajs) / (time.perf_counter() - start)
print(json.dumps(out))
"""


def baseline_tokens_per_s(root: Path, args: Any, params: SamplingParams,
                          configs: list[tuple[str, int]]) -> dict[str, float]:
    keys = ("block_size", "steps_per_block", "max_new_tokens", "ignore_eos", "temperature", "top_k", "threshold")
    spec = dict(threads=args.threads, hidden=args.hidden, layers=args.layers, vocab=args.vocab, block=params.block_size,
                prompt=args.prompt, configs=configs, params={k: getattr(params, k) for k in keys})
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run([sys.executable, "-c", _BASELINE, json.dumps(spec)], cwd=root, env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def sweep(model: DiffusionLM, params: SamplingParams, args: Any, lim: dict[str, float]) -> dict[str, Any]:
    """Every (strategy, batch) of --strategies × --batches, ours against each --baseline."""
    configs = [(s, int(b)) for s in args.strategies.split(",") for b in args.batches.split(",") if b]
    ours: dict[str, float] = {}
    theirs: dict[str, dict[str, float]] = {str(root): {} for root in args.baseline}
    tokens: dict[str, int] = {}
    for _ in range(args.repeats):  # turns, so load that comes and goes hits every engine alike
        for strategy, b in configs:
            name, p = f"{strategy}_b{b}", params.model_copy(update={"strategy": strategy})
            prompts = random_prompts(model.config, b, args.prompt)
            start = time.perf_counter()
            tokens[name] = sum(len(t.response_ids) for t in generate(model, prompts, p))
            ours[name] = max(ours.get(name, 0.0), tokens[name] / (time.perf_counter() - start))
        for root in args.baseline:
            for name, v in baseline_tokens_per_s(root, args, params, configs).items():
                theirs[str(root)][name] = max(theirs[str(root)].get(name, 0.0), v)
    out: dict[str, Any] = {}
    for strategy, b in configs:
        name, p = f"{strategy}_b{b}", params.model_copy(update={"strategy": strategy})
        work = decode_work(model, random_prompts(model.config, b, args.prompt), p)
        fig = {"tokens_per_s": round(ours[name], 1), **roofline(work, tokens[name] / ours[name], tokens[name], lim)}
        for root, tps in theirs.items():
            fig[f"over {root}"] = round(ours[name] / tps[name], 3)
            fig[f"tokens_per_s {root}"] = round(tps[name], 1)
        out[name] = fig
    return out
