"""GPU check sections 1-2: what the machine is, and which SDPA kernels run the sampler's attention
calls (plain torch: they run even where a project dependency is missing)."""
from __future__ import annotations

import importlib.metadata
import platform
import statistics
import time
import warnings
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench.gpu_check_common import Setup, gib, sync

PACKAGES = ("torch", "triton", "transformers", "safetensors", "tokenizers", "pydantic", "deepspeed", "ray")
BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def environment(setup: Setup) -> dict[str, Any]:
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in PACKAGES},
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if setup.cuda else None,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "sdpa_enabled": {"flash": torch.backends.cuda.flash_sdp_enabled(),
                         "efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                         "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
                         "math": torch.backends.cuda.math_sdp_enabled()},
        "cpu_threads": torch.get_num_threads(),
    }
    if setup.cuda:
        props = torch.cuda.get_device_properties(setup.device)
        free, total = torch.cuda.mem_get_info(setup.device)
        out["device"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                         "multiprocessors": props.multi_processor_count, "memory_gib": gib(total),
                         "free_gib": gib(free)}
    else:
        out["device"] = {"name": "cpu"}
    return out


def _cases(setup: Setup) -> dict[str, tuple[torch.Tensor, ...]]:
    """q, k, v, mask as models/decode_masks.py hands them to SDPA: the query heads sharing a K/V
    head folded into the query length, a bool mask the same for every head. Decode: SDAR-4B heads
    (32 query, 8 K/V, dim 128), the fused pass's 2B = 8 queries per row, 128 rows over a 4k cache,
    per-row key ends; prefill: 8 rows of 1k prompt tokens, block-causal."""
    rows, kv, group, tq, tk, dim, prompt_rows, prompt = (
        (4, 2, 2, 8, 64, 16, 2, 32) if setup.smoke else (128, 8, 4, 8, 4096, 128, 8, 1024))
    g = torch.Generator(device=setup.device).manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, device=setup.device, dtype=setup.dtype)

    ends = torch.randint(tk // 2, tk + 1, (rows,), generator=g, device=setup.device)
    key_valid = (torch.arange(tk, device=setup.device)[None] < ends[:, None])[:, None, None]
    block = torch.arange(prompt, device=setup.device) // 4
    causal = (block[None] <= block[:, None]).repeat(group, 1)[None, None]
    decode = (randn(rows, kv, group * tq, dim), randn(rows, kv, tk, dim), randn(rows, kv, tk, dim))
    prefill = (randn(prompt_rows, kv, group * prompt, dim), randn(prompt_rows, kv, prompt, dim),
               randn(prompt_rows, kv, prompt, dim))
    return {"decode_masked": (*decode, key_valid), "decode_unmasked": (*decode, None),
            "prefill_block_causal": (*prefill, causal)}


def _time_us(fn: Callable[[], torch.Tensor], device: torch.device, repeats: int = 5) -> float:
    """Median microseconds of `repeats` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e6, 1)


def sdpa_probe(setup: Setup) -> dict[str, Any]:
    """Per case and backend: ok, median microseconds and max |out - math backend|, or the error
    with torch's reasons (the warnings SDPA gives when it refuses a kernel)."""
    out: dict[str, Any] = {}
    for case, (q, k, v, mask) in _cases(setup).items():
        def call() -> torch.Tensor:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

        with sdpa_kernel(SDPBackend.MATH):
            reference = call().float()
        figures: dict[str, Any] = {}
        for name, backend in BACKENDS.items():
            with warnings.catch_warnings(record=True) as caught, sdpa_kernel(backend):
                warnings.simplefilter("always")
                try:
                    result = call()
                    figures[name] = {"ok": True, "us": _time_us(call, setup.device),
                                     "max_abs_diff_vs_math": float((result.float() - reference).abs().max())}
                except RuntimeError as e:
                    reasons = [str(w.message)[:200] for w in caught]
                    figures[name] = {"ok": False, "error": str(e)[:300], "reasons": reasons[:4]}
        out[case] = {"q": list(q.shape), "k": list(k.shape), "masked": mask is not None, **figures}
    return out
