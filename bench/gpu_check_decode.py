"""GPU check sections 3-5: the eager rollout engine (rollout/engine.py) on the device.

- exactness: cached vs uncached decoding, every strategy, fp32, sharpened random model (see
  gpu_check_common.sharpen): differing tokens and step-map entries, max |delta logit| over the
  passes both runs made at the same shapes (their logits recorded through the sampler's `forward`
  argument), max |delta log-prob|. 0 differing tokens is the pass mark; the logit delta says how
  far from a flip the rounding was.
- eager_decode: per shape (SDAR-1.7B, SDAR-4B; random weights, bf16, B = 4, K = 4, EOS ignored),
  static and dynamic: tokens/s, tokens/forward (static must be exactly 1.0: prompts are whole
  blocks), the engine's pass and host-sync counters; on CUDA the synchronisations torch itself
  sees (set_sync_debug_mode("warn"), one warning each) on a short decode. Random weights are not
  confident, so dynamic commits its floor (n_k) and runs like static.
- decode_profile: a short dynamic decode of the target shape under torch.profiler: the share of
  its wall time a kernel ran (GPU-busy), kernel launches, top 5 kernels (on a CPU: top 5 ops).
- memory_sizing: the decode plan (rollout.sizing.plan_decode: rows in flight, prefill tokens) for
  the target shape before a generate(), after it, and after torch.cuda.empty_cache(), with torch's
  allocated / reserved / free memory: memory the caching allocator keeps after a decode is not
  free to the driver, and the plan must not shrink because of it (rows_equal). Also the decode's
  measured peak against the plan's estimate (rows x KV row + workspace).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from bench.gpu_check_common import BLOCK, STEPS, Setup, gib, max_abs_diff, sharpen, sync, token_diff
from bench.shapes import random_model, random_prompts
from models.transformer import DiffusionLM
from rollout.decode_forward import DecodeForward
from rollout.device_memory import read_device_memory
from rollout.params import SamplingParams
from rollout.sampler import generate
from rollout.sizing import plan_decode, row_costs
from rollout.slot_table import canvas_of
from rollout.trajectory import Trajectory

STRATEGIES = ("static", "dynamic", "entropy_bounded", "random", "sequential")
ROWS_ASKED = 1 << 20  # memory_sizing asks for more rows than any GPU holds: the answer is what fits


@dataclass(frozen=True)
class RecordingForward(DecodeForward):
    """The eager decode pass, keeping a copy of every pass's logits (the sampler overwrites them)."""

    seen: list[torch.Tensor] = field(default_factory=list)

    def logits(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = super().logits(*args, **kwargs)
        self.seen.append(out.float().clone())
        return out


def logit_delta(a: list[torch.Tensor], b: list[torch.Tensor]) -> tuple[float, int]:
    """(max |a - b|, passes compared) over the leading passes whose logits have the same shape."""
    worst, n = 0.0, 0
    for x, y in zip(a, b):
        if x.shape != y.shape:
            break
        if x.numel():
            worst = max(worst, float((x - y).abs().max()))
        n += 1
    return worst, n


def compare(a: list[Trajectory], b: list[Trajectory]) -> dict[str, Any]:
    return {"differing_tokens": token_diff([t.response_ids for t in a], [t.response_ids for t in b]),
            "differing_steps": token_diff([t.step_map for t in a], [t.step_map for t in b]),
            "tokens": sum(len(t.response_ids) for t in a),
            "max_abs_delta_logprob": max_abs_diff([t.logprobs for t in a], [t.logprobs for t in b])}


def exactness(setup: Setup) -> dict[str, Any]:
    batch, new = (4, 8) if setup.smoke else (16, 32)
    model = random_model(setup.exact_shape, BLOCK, setup.device, torch.float32)
    sharpen(model)
    # Prompt tails share the first generated block; half as many slots as rows: slots are reused.
    prompts = [p[:setup.prompt - i % 5] for i, p in enumerate(random_prompts(model.config, batch, setup.prompt))]
    out: dict[str, Any] = {"rows": batch, "new_tokens": new}
    for strategy in STRATEGIES:
        p = SamplingParams(strategy=strategy, max_new_tokens=new, ignore_eos=True, threshold=0.9,
                           max_batch_rows=max(batch // 2, 1))
        cached_pass, uncached_pass = RecordingForward(), RecordingForward()
        cached = generate(model, prompts, p, forward=cached_pass)
        uncached = generate(model, prompts, p.model_copy(update={"use_cache": False}), forward=uncached_pass)
        delta, compared = logit_delta(cached_pass.seen, uncached_pass.seen)
        out[strategy] = {**compare(cached, uncached), "max_abs_delta_logit": delta, "passes_compared": compared,
                         "passes": [len(cached_pass.seen), len(uncached_pass.seen)]}
    return out


def fixed_cache(prompt: int, **fields: Any) -> SamplingParams:
    """Parameters (EOS ignored) with the cache width fixed by the prompt length, so a shorter
    warm-up call and the timed call run the same shapes (what compiled and graph passes need)."""
    base = SamplingParams(ignore_eos=True, **fields)
    return base.model_copy(update={"cache_tokens": canvas_of(prompt, base, True)[1]})


def timed_decode(model: DiffusionLM, prompts: list[list[int]], p: SamplingParams,
                 device: torch.device) -> tuple[dict[str, Any], list[Trajectory]]:
    stats: dict[str, int] = {}
    sync(device)
    start = time.perf_counter()
    trajs = generate(model, prompts, p, stats=stats)
    sync(device)
    seconds = time.perf_counter() - start
    tokens = sum(len(t.response_ids) for t in trajs)
    return {"tokens_per_s": round(tokens / seconds, 1),
            "tokens_per_forward": round(tokens / sum(t.num_forwards for t in trajs), 3),
            "passes": stats["passes"], "host_syncs": stats["host_syncs"],
            "host_syncs_per_pass": round(stats["host_syncs"] / stats["passes"], 3), "seconds": round(seconds, 3)}, trajs


def torch_syncs(model: DiffusionLM, prompts: list[list[int]], p: SamplingParams) -> dict[str, Any]:
    """Synchronisations torch reports (set_sync_debug_mode("warn"): one warning per synchronising
    call) next to the engine's own count, on one decode. More warnings than engine syncs: a
    synchronisation the engine does not know it makes."""
    stats: dict[str, int] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            generate(model, prompts, p, stats=stats)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    n = sum("synchroniz" in str(w.message) for w in caught)
    return {"torch_sync_warnings": n, "engine_host_syncs": stats["host_syncs"], "passes": stats["passes"],
            "torch_syncs_per_pass": round(n / stats["passes"], 3)}


def profile_summary(model: DiffusionLM, prompts: list[list[int]], p: SamplingParams,
                    device: torch.device) -> dict[str, Any]:
    """One short decode under torch.profiler: the share of its wall time some kernel ran, and the
    top 5 kernels by device time (on a CPU: the top 5 ops by self CPU time)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    sync(device)
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        generate(model, prompts, p)
        sync(device)
    wall_us = (time.perf_counter() - start) * 1e6
    if not cuda:
        top = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:5]
        return {"wall_ms": round(wall_us / 1e3, 1), "gpu_busy_fraction": None,
                "top_ops": [{"name": e.key[:100], "us": round(e.self_cpu_time_total, 1), "count": e.count}
                            for e in top]}
    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    busy, end = 0.0, float("-inf")
    for e in sorted(kernels, key=lambda e: e.time_range.start):  # union of the kernels' intervals
        busy += max(0.0, e.time_range.end - max(e.time_range.start, end))
        end = max(end, e.time_range.end)
    by_name: dict[str, list[float]] = {}
    for e in kernels:
        by_name.setdefault(e.name, []).append(e.time_range.elapsed_us())
    top_names = sorted(by_name, key=lambda n: sum(by_name[n]), reverse=True)[:5]
    return {"wall_ms": round(wall_us / 1e3, 1), "gpu_busy_fraction": round(busy / wall_us, 3),
            "kernel_launches": len(kernels),
            "top_kernels": [{"name": n[:100], "us": round(sum(by_name[n]), 1), "count": len(by_name[n])}
                            for n in top_names]}


def eager_decode(setup: Setup) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in setup.shape_names:
        model = random_model(setup.shape(name), BLOCK, setup.device, setup.dtype)
        prompts = random_prompts(model.config, setup.batch, setup.prompt)
        figures: dict[str, Any] = {}
        for strategy in ("static", "dynamic"):
            p = fixed_cache(setup.prompt, strategy=strategy, max_new_tokens=setup.new, max_batch_rows=setup.batch)
            short = p.model_copy(update={"max_new_tokens": min(4 * BLOCK, setup.new)})
            generate(model, prompts, short)  # warm-up: cuBLAS handles, allocator pools
            figures[strategy], _ = timed_decode(model, prompts, p, setup.device)
            if setup.cuda:
                figures[strategy]["torch_syncs"] = torch_syncs(model, prompts, short)
        figures["params_b"] = round(sum(p.numel() for p in model.parameters()) / 1e9, 3)
        out[name] = figures
        del model
        if setup.cuda:
            torch.cuda.empty_cache()
    out["setup"] = {"dtype": str(setup.dtype).removeprefix("torch."), "batch": setup.batch, "prompt": setup.prompt,
                    "new_tokens": setup.new, "block": BLOCK, "steps_per_block": STEPS}
    return out


def decode_profile(setup: Setup) -> dict[str, Any]:
    """The profiler summary of a short dynamic decode of the target shape (its own section: a
    profiler that cannot start here costs this line, not the throughput figures)."""
    model = random_model(setup.shape(setup.target_shape), BLOCK, setup.device, setup.dtype)
    prompts = random_prompts(model.config, setup.batch, setup.prompt)
    p = fixed_cache(setup.prompt, strategy="dynamic", max_new_tokens=setup.new, max_batch_rows=setup.batch)
    short = p.model_copy(update={"max_new_tokens": min(2 * BLOCK, setup.new)})
    generate(model, prompts, short)  # warm-up
    return {"shape": setup.target_shape, "new_tokens": short.max_new_tokens,
            **profile_summary(model, prompts, short, setup.device)}


def _memory_probe(model: DiffusionLM, p: SamplingParams, capacity: int, device: torch.device) -> dict[str, Any]:
    reading = read_device_memory(device)
    plan = plan_decode(model, p, capacity, ROWS_ASKED, reading)
    figures: dict[str, Any] = {"rows_that_fit": plan.slots, "prefill_tokens": plan.prefill_tokens}
    if reading is not None:
        figures.update(allocated_gib=gib(reading.allocated), reserved_gib=gib(reading.reserved),
                       free_gib=gib(reading.free), available_gib=gib(reading.available))
    return figures


def memory_sizing(setup: Setup) -> dict[str, Any]:
    model = random_model(setup.shape(setup.target_shape), BLOCK, setup.device, setup.dtype)
    prompts = random_prompts(model.config, setup.batch, setup.prompt)
    p = SamplingParams(strategy="dynamic", max_new_tokens=setup.new, ignore_eos=True, max_batch_rows=setup.batch)
    capacity = canvas_of(setup.prompt, p, True)[1]
    out: dict[str, Any] = {"shape": setup.target_shape, "capacity": capacity, "rows_asked": ROWS_ASKED,
                           "before": _memory_probe(model, p, capacity, setup.device)}
    if setup.cuda:
        base = torch.cuda.memory_allocated(setup.device)
        torch.cuda.reset_peak_memory_stats(setup.device)
    generate(model, prompts, p)
    out["after_generate"] = _memory_probe(model, p, capacity, setup.device)
    out["rows_equal"] = out["before"]["rows_that_fit"] == out["after_generate"]["rows_that_fit"]
    if setup.cuda:
        costs = row_costs(model, p, capacity)
        rows = min(setup.batch, len(prompts))
        estimate = rows * costs.kv_row + max(rows * costs.pass_row, costs.prefill_one())
        peak = torch.cuda.max_memory_allocated(setup.device) - base
        out.update(decode_peak_gib=gib(peak), plan_estimate_gib=gib(estimate),
                   peak_over_estimate=round(peak / estimate, 3))
        torch.cuda.empty_cache()
        out["after_empty_cache"] = _memory_probe(model, p, capacity, setup.device)
    return out
