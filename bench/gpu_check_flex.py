"""The learner's FlexAttention kernel on the device (models/slot_flex.py): what a CPU cannot check.

`flex_figures("cuda")` runs calls of changing (R, T), with and without gradients, fp32 and under
bf16 autocast, through `SlotMask(kernel="flex")` and reports the largest differences to dense
attention under the same rule (outputs; q/k/v gradients relative to their largest), the graphs compiled (expected: one
per grad mode and dtype, 4), the first call's seconds (compile), and one packed learner row of
20k slots in bf16 forward + backward (seconds, peak memory: eager flex would need ~27 GB of scores).

    python bench/gpu_check_flex.py            # CUDA, about a minute
    python bench/gpu_check_flex.py --smoke    # CPU: no-grad calls only run flex, tiny shapes
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import emit  # noqa: E402
from bench.gpu_check_common import SectionSkipped, Setup  # noqa: E402
from models.slot_mask import SlotMask  # noqa: E402

CALLS = [(3, 700, False, False), (1, 1000, True, False), (4, 513, True, True), (2, 1500, False, True),
         (1, 77, True, True), (5, 300, False, False)]  # (R, T, grad, bf16 autocast)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _random_mask(gen: torch.Generator, R: int, T: int, device: str) -> SlotMask:
    copy = torch.randint(0, 4, (R, T), generator=gen)
    block = torch.randint(0, 60, (R, T), generator=gen).sort(dim=1).values
    valid = torch.arange(T)[None] < torch.randint(1, T + 1, (R,), generator=gen)[:, None]
    return SlotMask(copy, block, valid, kernel="flex").to(device)


def _versus_dense(device: str, gen: torch.Generator, R: int, T: int, grad: bool, autocast: bool) -> tuple[float, float]:
    """(max |out - dense|, max |grad - dense grad| / max |dense grad|) of one call; dense runs in the
    call's compute dtype."""
    spec = _random_mask(gen, R, T, device)
    q, k, v = (torch.randn(R, h, T, 64, generator=gen).to(device).requires_grad_(grad) for h in (8, 2, 2))
    w = torch.randn(R, 8, T, 64, generator=gen).to(device)
    with torch.set_grad_enabled(grad), torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=autocast):
        out = spec.attend(q, k, v, enable_gqa=True)
        dense = F.scaled_dot_product_attention(q, k, v, attn_mask=spec.rows()[:, None], enable_gqa=True)
    if not grad:
        return float((out.float() - dense.float()).abs().max()), 0.0
    ours = torch.autograd.grad((out.float() * w).sum(), (q, k, v))
    theirs = torch.autograd.grad((dense.float() * w).sum(), (q, k, v))
    return (float((out.float() - dense.float()).abs().max()),
            max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(ours, theirs)))


def _long_row(device: str, length: int = 4096, block: int = 4, rounds: int = 4) -> dict:
    """One packed TraceRL row (clean copy + `rounds` noisy copies of a `length`-token response),
    SDAR-1.7B attention shapes, bf16, forward + backward."""
    copy = torch.arange(rounds + 1).repeat_interleave(length)[None]
    spec = SlotMask(copy, (torch.arange(length) // block).repeat(rounds + 1)[None],
                    torch.ones_like(copy, dtype=torch.bool), kernel="flex").to(device)
    T = copy.shape[1]
    q, k, v = (torch.randn(1, h, T, 128, device=device, dtype=torch.bfloat16, requires_grad=True) for h in (16, 8, 8))
    spec.attend(q, k, v, enable_gqa=True).sum().backward()  # warm: the bf16 grad variant exists already
    _sync(device)
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    spec = SlotMask(spec.copy, spec.block, spec.valid, kernel="flex")  # a fresh plan, as per micro-batch
    spec.attend(q, k, v, enable_gqa=True).sum().backward()
    _sync(device)
    return {"flex_long_row_slots": T, "flex_long_row_s": round(time.perf_counter() - start, 3),
            "flex_long_row_peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def flex_figures(device: str) -> dict:
    gen = torch.Generator().manual_seed(0)
    graphs = counters["stats"]["unique_graphs"]
    errors: dict[str, float] = {}
    start = time.perf_counter()
    first = None
    for R, T, grad, autocast in CALLS:
        out_err, grad_err = _versus_dense(device, gen, R, T, grad, autocast)
        first = first if first is not None else round(time.perf_counter() - start, 1)
        key = "bf16" if autocast else "fp32"
        errors[f"flex_max_abs_{key}"] = max(errors.get(f"flex_max_abs_{key}", 0.0), out_err)
        errors[f"flex_grad_max_rel_{key}"] = max(errors.get(f"flex_grad_max_rel_{key}", 0.0), grad_err)
    figures = {**errors, "flex_graphs": counters["stats"]["unique_graphs"] - graphs, "flex_first_call_s": first}
    if device.startswith("cuda"):
        figures |= _long_row(device)
    return figures


def flex_section(setup: Setup) -> dict:
    """The GPU check's flex section. On a CPU (--smoke) it is skipped: the compiled CPU forward is
    tests/learner/test_slot_flex.py's, and a CPU compile costs the smoke run ~30 s."""
    if not setup.cuda:
        raise SectionSkipped("no CUDA: the compiled CPU forward is tested by tests/learner/test_slot_flex.py")
    return flex_figures(str(setup.device))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="run on CPU")
    a = ap.parse_args()
    emit(flex_figures("cpu" if a.smoke else "cuda"))
