"""What the bench scripts share: the flags they have in common, the best-of-N timer, the one JSON
line each prints, synthetic decoding traces, and the machine's own limits (matmul rate, memory
bandwidth) that the sampler and learner figures are compared with.

A script run as `python bench/x.py` has bench/ first on sys.path, where learner.py and rewards.py
would shadow the packages, so each script puts the repository first (one line) before importing
this module and the packages."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from rollout.trajectory import Trajectory

REPO = Path(__file__).resolve().parents[1]


def bench_parser(doc: str | None = None, quick: str | None = None, threads: int | None = None,
                 repeats: int | None = None, repeats_help: str | None = None) -> argparse.ArgumentParser:
    """A parser with --quick (a smaller, faster run; `quick` is its help text), and --threads /
    --repeats with the given defaults where a script has them."""
    ap = (argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter) if doc
          else argparse.ArgumentParser())
    ap.add_argument("--quick", action="store_true", help=quick)
    if threads is not None:
        ap.add_argument("--threads", type=int, default=threads)
    if repeats is not None:
        ap.add_argument("--repeats", type=int, default=repeats, help=repeats_help)
    return ap


def fastest(fns: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Fastest of `repeats` timings of each fn, and each fn's last result; the fns take turns, so
    load that comes and goes on a shared machine hits them alike."""
    best, out = {name: float("inf") for name in fns}, {}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            out[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, out


def best_of(repeats: int, fn: Callable[[], Any]) -> float:
    """Seconds of the fastest of `repeats` calls of fn."""
    return fastest({"fn": fn}, repeats)[0]["fn"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the fastest of `repeats` [n, n] @ [n, n] matmuls: the rate a compute-bound pass can
    reach on this device (the roofline's flat part)."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    a @ b

    def once() -> None:
        a @ b
        _sync(device)

    return 2 * n**3 / best_of(repeats, once)


MEMORY_PROBE_BYTES = 1 << 30  # well past the last-level cache of the machines this runs on (300 MiB here)


def read_bandwidth(device: torch.device, nbytes: int = MEMORY_PROBE_BYTES, repeats: int = 5) -> float:
    """Bytes/s of the fastest of `repeats` reads (a sum) of an fp32 buffer of `nbytes`. The default
    is the memory's rate (STREAM's rule: a buffer far larger than the caches); a buffer the size of
    what a pass streams shows what the caches give that working set."""
    x = torch.ones(max(nbytes // 4, 1 << 20), device=device)
    x.sum()

    def once() -> None:
        x.sum()
        _sync(device)

    return x.numel() * 4 / best_of(repeats, once)


def emit(figures: dict[str, Any]) -> None:
    """The bench's one output line: its figures as JSON."""
    print(json.dumps(figures), flush=True)


def synthetic(n: int, prompt: int, length: int, block: int, vocab: int, seed: int) -> list[Trajectory]:
    """Static decoding traces: each block commits one token per step in a random order (K = B)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        steps, start, step = [], prompt, 0
        while start < prompt + length:
            end = min((start // block + 1) * block, prompt + length)
            steps += (step + 1 + torch.randperm(end - start, generator=g)).tolist()
            step, start = step + end - start, end
        out.append(Trajectory(prompt_ids=torch.randint(1, vocab - 2, (prompt,), generator=g).tolist(),
                              response_ids=torch.randint(1, vocab - 2, (length,), generator=g).tolist(),
                              step_map=steps, logprobs=[0.0] * length, entropies=[0.0] * length,
                              block_size=block, finish_reason="length", num_forwards=step))
    return out
