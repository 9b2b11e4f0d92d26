"""What the bench scripts share: the flags they have in common, the best-of-N timer, and the one
JSON line each prints.

A script run as `python bench/x.py` has bench/ first on sys.path, where learner.py and rewards.py
would shadow the packages, so each script puts the repository first (one line) before importing
this module and the packages."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

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


def emit(figures: dict[str, Any]) -> None:
    """The bench's one output line: its figures as JSON."""
    print(json.dumps(figures), flush=True)
