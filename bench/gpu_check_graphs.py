"""GPU check section 8, last (compiling is the slowest and riskiest part): the decode passes as
CUDA graphs (`rollout.cuda_graphs`, rollout/decode_forward.py).

- graphs_exactness: fp32, sharpened random model, greedy dynamic decoding, eager vs graphs:
  differing tokens of the first (compiling, recording) call and of a replaying call; 0 is the pass
  mark.
- graphs_throughput: the target shape (SDAR-4B) in bf16, dynamic, batch 128: tokens/s with graphs
  and eager in the same section, and the ratio; differing tokens are informative only (a bf16
  kernel may round differently, and a changed logit can change a sampled token).

Both report the seconds of the first graphs call (compile + record), the graphs recorded, and
torch's dynamo/inductor counters over the section (inductor.cudagraph_skips: passes that ran
without graphs). Each starts with torch._dynamo.reset(), so earlier compiles (the learner's
FlexAttention, the other section) neither count nor turn its sizes dynamic. Without CUDA the
sampler falls back to eager passes (with a warning): the section's code runs, graphs=false.
"""
from __future__ import annotations

import time
from typing import Any

import torch

from bench.gpu_check_common import BLOCK, Setup, max_abs_diff, sharpen, sync, token_diff
from bench.gpu_check_decode import fixed_cache, timed_decode
from bench.shapes import random_model, random_prompts
from rollout.sampler import generate


def counters() -> dict[str, int]:
    from torch._dynamo.utils import counters as dynamo_counters

    return {f"{group}.{key}": n for group in ("stats", "inductor") for key, n in dynamo_counters[group].items()}


def counters_since(before: dict[str, int]) -> dict[str, int]:
    after = counters()
    changed = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
    return {"inductor.cudagraph_skips": 0, **changed}


def graphs_recorded(device: torch.device) -> int | None:
    """CUDA graphs recorded since the last torch._dynamo.reset(): the graph-tree manager numbers
    them from 0 (a private attribute: None where this torch has it otherwise)."""
    if device.type != "cuda":
        return None
    try:
        from torch._inductor.cudagraph_trees import get_manager

        manager = get_manager(torch.cuda.current_device(), create_if_none_exists=False)
        return 0 if manager is None else int(repr(manager.graph_counter).removeprefix("count(").removesuffix(")"))
    except (ImportError, AttributeError, ValueError):
        return None


def _timed(fn: Any, device: torch.device) -> tuple[Any, float]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, round(time.perf_counter() - start, 3)


def graphs_exactness(setup: Setup) -> dict[str, Any]:
    torch._dynamo.reset()
    batch, new = (4, 8) if setup.smoke else (16, 32)
    model = random_model(setup.exact_shape, BLOCK, setup.device, torch.float32)
    sharpen(model)
    prompts = random_prompts(model.config, batch, setup.prompt)
    p = fixed_cache(setup.prompt, strategy="dynamic", temperature=0.0, threshold=0.9, max_new_tokens=new,
                    max_batch_rows=batch)
    g = p.model_copy(update={"cuda_graphs": True})
    eager, eager_s = _timed(lambda: generate(model, prompts, p), setup.device)
    before = counters()
    first, first_s = _timed(lambda: generate(model, prompts, g), setup.device)
    replayed, replay_s = _timed(lambda: generate(model, prompts, g), setup.device)

    def ids(trajs: list) -> list[list[int]]:
        return [t.response_ids for t in trajs]

    return {"graphs": setup.cuda, "rows": batch, "new_tokens": new, "tokens": sum(map(len, ids(eager))),
            "differing_tokens_first_call": token_diff(ids(eager), ids(first)),
            "differing_tokens_replayed": token_diff(ids(eager), ids(replayed)),
            "max_abs_delta_logprob_replayed": max_abs_diff([t.logprobs for t in eager], [t.logprobs for t in replayed]),
            "eager_s": eager_s, "first_call_s": first_s, "replay_call_s": replay_s,
            "graphs_recorded": graphs_recorded(setup.device), "counters": counters_since(before)}


def graphs_throughput(setup: Setup) -> dict[str, Any]:
    torch._dynamo.reset()
    model = random_model(setup.shape(setup.target_shape), BLOCK, setup.device, setup.dtype)
    prompts = random_prompts(model.config, setup.batch, setup.prompt)
    p = fixed_cache(setup.prompt, strategy="dynamic", max_new_tokens=setup.new, max_batch_rows=setup.batch)
    g = p.model_copy(update={"cuda_graphs": True})
    generate(model, prompts, p.model_copy(update={"max_new_tokens": 2 * BLOCK}))  # eager warm-up
    eager, eager_trajs = timed_decode(model, prompts, p, setup.device)
    before = counters()
    # Same rows and cache width as the timed call: it compiles and records both pass shapes.
    _, first_s = _timed(lambda: generate(model, prompts, g.model_copy(update={"max_new_tokens": 2 * BLOCK})),
                        setup.device)
    graphs, graphs_trajs = timed_decode(model, prompts, g, setup.device)
    return {"graphs": setup.cuda, "shape": setup.target_shape, "dtype": str(setup.dtype).removeprefix("torch."),
            "eager": eager, "cuda_graphs": graphs,
            "over_eager": round(graphs["tokens_per_s"] / eager["tokens_per_s"], 3),
            "differing_tokens_vs_eager": token_diff([t.response_ids for t in eager_trajs],
                                                [t.response_ids for t in graphs_trajs]),
            "first_call_s": first_s, "graphs_recorded": graphs_recorded(setup.device),
            "counters": counters_since(before)}
