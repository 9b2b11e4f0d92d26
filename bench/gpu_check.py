"""One prepared GPU check of the rollout engine: prints ONE JSON line. Needs torch, transformers and
safetensors (and pydantic, which the sampling parameters use); no Ray, no DeepSpeed.

    python bench/gpu_check.py            # on one H100/H200, a few minutes
    python bench/gpu_check.py --smoke    # CPU, tiny shapes, seconds (what the test runs)

Figures:
- cached_equals_uncached: every strategy, fp32 on the device, token for token.
- per shape (SDAR-1.7B and SDAR-4B, random weights, bf16) and strategy (static, dynamic): tokens/s,
  tokens/forward and host syncs per pass at batch 128 (B = 4, K = 4, EOS ignored), peak memory.
  Random weights are not confident, so dynamic commits its floor (n_k) and runs like static.
- SDAR-4B, dynamic with rollout.cuda_graphs (decode passes compiled with mode="reduce-overhead" at
  fixed shapes, replayed as CUDA graphs): tokens/s, over_dynamic (÷ the eager dynamic run) and the
  share of response tokens equal to the eager run's (bf16: a compiled kernel may round differently,
  and a changed logit can change a sampled token; fp32 exactness is tests/rollout/test_decode_forward.py).
  The warm-up call (same rows and cache width) compiles and records; the timed call only replays.
  On a CPU (--smoke) the key falls back to eager with a warning.
- learner: one policy step of an SDAR-1.7B-shaped model (bench/gpu_check_learner.py).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import emit  # noqa: E402
from bench.gpu_check_learner import learner_figures  # noqa: E402
from bench.shapes import SHAPES, random_model, random_prompts  # noqa: E402
from rollout.engine import canvas_of  # noqa: E402
from rollout.params import SamplingParams  # noqa: E402
from rollout.sampler import generate  # noqa: E402

STRATEGIES = ("static", "dynamic", "entropy_bounded", "random", "sequential")
SMOKE_SHAPE = dict(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                   vocab_size=512)
EXACT_SHAPE = dict(hidden_size=512, intermediate_size=1536, num_layers=4, num_heads=8, num_kv_heads=4, head_dim=64,
                   vocab_size=151936)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def exactness(shape: dict[str, int], device: torch.device, batch: int, prompt: int, new: int) -> bool:
    model = random_model(shape, 4, device, torch.float32)
    prompts = [p[:prompt - i % 5] for i, p in enumerate(random_prompts(model.config, batch, prompt))]
    for strategy in STRATEGIES:
        p = SamplingParams(strategy=strategy, max_new_tokens=new, ignore_eos=True, threshold=0.5,
                           max_batch_rows=max(batch // 2, 1))
        cached = generate(model, prompts, p)
        uncached = generate(model, prompts, p.model_copy(update={"use_cache": False}))
        if [t.response_ids for t in cached] != [t.response_ids for t in uncached]:
            return False
    return True


def throughput(shape: dict[str, int], device: torch.device, dtype: torch.dtype, batch: int, prompt: int,
               new: int, compile_model: bool, graphs: bool) -> dict[str, Any]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model = random_model(shape, 4, device, dtype)
    prompts = random_prompts(model.config, batch, prompt)
    # One cache width for warm-up and timed run, so compiled passes keep their shapes.
    base = SamplingParams(max_new_tokens=new, ignore_eos=True, max_batch_rows=batch, compile=compile_model)
    base = base.model_copy(update={"cache_tokens": canvas_of(prompt, base, True)[1]})
    runs = {name: base.model_copy(update={"strategy": name}) for name in ("static", "dynamic")}
    if graphs:
        runs["dynamic_cuda_graphs"] = runs["dynamic"].model_copy(update={"cuda_graphs": True})
    out: dict[str, Any] = {}
    responses: dict[str, list[list[int]]] = {}
    for name, p in runs.items():
        generate(model, prompts, p.model_copy(update={"max_new_tokens": 8}))  # warm-up (compiles, records)
        stats: dict[str, int] = {}
        sync(device)
        start = time.perf_counter()
        trajs = generate(model, prompts, p, stats=stats)
        sync(device)
        seconds = time.perf_counter() - start
        tokens = sum(len(t.response_ids) for t in trajs)
        responses[name] = [t.response_ids for t in trajs]
        out[name] = {"tokens_per_s": round(tokens / seconds, 1),
                     "tokens_per_forward": round(tokens / sum(t.num_forwards for t in trajs), 3),
                     "host_syncs_per_pass": round(stats["host_syncs"] / stats["passes"], 3),
                     "seconds": round(seconds, 2)}
    if graphs:
        eager, replayed = responses["dynamic"], responses["dynamic_cuda_graphs"]
        same = sum(a == b for x, y in zip(eager, replayed) for a, b in zip(x, y))
        out["dynamic_cuda_graphs"].update(
            over_dynamic=round(out["dynamic_cuda_graphs"]["tokens_per_s"] / out["dynamic"]["tokens_per_s"], 3),
            tokens_equal_dynamic=eager == replayed, same_token_share=round(same / sum(map(len, eager)), 4),
            graphs=device.type == "cuda")
    if device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    del model
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny shapes: checks the script itself")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--compile", action="store_true", help="static/dynamic runs with rollout.compile")
    ap.add_argument("--no-cuda-graphs", action="store_true", help="skip the SDAR-4B rollout.cuda_graphs run")
    args = ap.parse_args()
    if args.smoke:
        device, dtype = torch.device("cpu"), torch.float32
        shapes, exact_shape = {"smoke_a": SMOKE_SHAPE, "smoke_b": SMOKE_SHAPE}, SMOKE_SHAPE
        batch, prompt, new = 6, 8, 8
    else:
        if not torch.cuda.is_available():
            ap.error("no CUDA device: run with --smoke on a CPU")
        device, dtype = torch.device("cuda"), torch.bfloat16
        shapes, exact_shape = SHAPES, EXACT_SHAPE
        batch, prompt, new = args.batch, args.prompt, args.new
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.no_grad():
        out: dict[str, Any] = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                               "torch": torch.__version__, "batch": batch, "prompt": prompt, "new_tokens": new,
                               "block": 4, "steps_per_block": 4, "dtype": str(dtype).removeprefix("torch."),
                               "cached_equals_uncached": exactness(exact_shape, device, 16 if not args.smoke else 4,
                                                                   prompt, 32 if not args.smoke else 8)}
        for i, (name, shape) in enumerate(shapes.items()):  # CUDA graphs on the last (SDAR-4B) shape
            graphs = i == len(shapes) - 1 and not args.no_cuda_graphs
            out[name] = throughput(shape, device, dtype, batch, prompt, new, args.compile, graphs)
    out["seconds"] = round(time.perf_counter() - start, 1)
    out["learner"] = learner_figures(str(device), args.smoke)
    emit(out)


if __name__ == "__main__":
    main()
