"""The prepared GPU check: one JSON line per section, printed and flushed as each ends, then a
summary line; a section that raises, or is still running at the deadline, prints its error and
traceback tail and the others go on, so a crash or `timeout` loses at most the section it hit.

    timeout 470 python bench/gpu_check.py      # one H100/H200, under 8 minutes
    python bench/gpu_check.py --sections graphs_exactness,graphs_throughput   # a rerun of some
    python bench/gpu_check.py --smoke          # CPU, tiny shapes (what tests/rollout/test_gpu_check.py runs)

Needs torch; the sections that decode or train also need transformers, safetensors and pydantic,
the deepspeed section deepspeed (bench/gpu_wheels.sh prepares wheels to install offline). No Ray.

Each line: {"section", "status": ok | error | skipped, "seconds", "peak_allocated_gib",
"peak_reserved_gib" (CUDA; peak stats reset per section), and "figures", or "error" +
"traceback", or "reason"}. Sections, in order (their modules say what each figure means):
environment, sdpa (bench/gpu_check_env.py); exactness, eager_decode, decode_profile,
memory_sizing (bench/gpu_check_decode.py); learner (bench/gpu_check_learner.py); flex
(bench/gpu_check_flex.py); process_group, deepspeed (bench/gpu_check_dist.py); weight_sync
(bench/gpu_check_weight_sync.py); graphs_exactness, graphs_throughput (bench/gpu_check_graphs.py).
The summary lists the sections by status and checks the targets: target-shape (SDAR-4B) eager
dynamic >= 5,000 tokens/s at batch 128, static exactly 1.0 tokens/forward on every shape, eager vs
CUDA graphs fp32 greedy tokens identical.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TextIO

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.gpu_check_common import BLOCK, STEPS, SectionSkipped, Setup, gib, setup_for  # noqa: E402

Section = Callable[[Setup], dict[str, Any]]
TARGET_TOKENS_PER_S = 5000.0
TRACEBACK_CHARS = 3000


class DeadlineReached(BaseException):
    """Raised inside a section still running when the check's deadline passes. A BaseException,
    like KeyboardInterrupt, so library code catching Exception cannot swallow it."""


def _lazy(module: str, name: str) -> Section:
    """The section function `name` of bench/`module`, imported when the section runs: a package
    the GPU image lacks then fails the sections that import it, not the whole check."""
    def run(setup: Setup) -> dict[str, Any]:
        return getattr(importlib.import_module(f"bench.{module}"), name)(setup)
    return run


SECTIONS: tuple[tuple[str, Section], ...] = (
    ("environment", _lazy("gpu_check_env", "environment")),
    ("sdpa", _lazy("gpu_check_env", "sdpa_probe")),
    ("exactness", _lazy("gpu_check_decode", "exactness")),
    ("eager_decode", _lazy("gpu_check_decode", "eager_decode")),
    ("decode_profile", _lazy("gpu_check_decode", "decode_profile")),
    ("memory_sizing", _lazy("gpu_check_decode", "memory_sizing")),
    ("learner", _lazy("gpu_check_learner", "learner_step")),
    ("flex", _lazy("gpu_check_flex", "flex_section")),
    ("process_group", _lazy("gpu_check_dist", "process_group")),
    ("deepspeed", _lazy("gpu_check_dist", "deepspeed_steps")),
    ("weight_sync", _lazy("gpu_check_weight_sync", "weight_sync_section")),
    ("graphs_exactness", _lazy("gpu_check_graphs", "graphs_exactness")),
    ("graphs_throughput", _lazy("gpu_check_graphs", "graphs_throughput")),
)


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """DeadlineReached in this (main) thread after `seconds`, and again every 5 s until the section
    has returned, so the section running then still reports where it was and the summary still
    prints before an outer `timeout` kills the run."""
    def fire(signum: int, frame: Any) -> None:
        raise DeadlineReached(f"still running at the deadline ({seconds:.0f} s after it started)")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 5.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _memory(setup: Setup) -> dict[str, Any]:
    """Peak allocated / reserved since the section started, then what it left handed back to the
    driver (a failed section's tensors held by its traceback, compiled graphs' pools), so the next
    one starts from the same memory. A CUDA context a section broke fails here too: that is said,
    not raised, so the other sections still get their lines."""
    gc.collect()
    if not setup.cuda:
        return {}
    try:
        peaks = {"peak_allocated_gib": gib(torch.cuda.max_memory_allocated(setup.device)),
                 "peak_reserved_gib": gib(torch.cuda.max_memory_reserved(setup.device))}
        torch.cuda.empty_cache()
        return peaks
    except RuntimeError as e:
        return {"memory_error": str(e)[:300]}


def run_section(name: str, fn: Section, setup: Setup, seconds_left: float) -> dict[str, Any]:
    line: dict[str, Any] = {"section": name}
    start = time.perf_counter()
    try:
        with _alarm(seconds_left):
            if setup.cuda:
                torch.cuda.reset_peak_memory_stats(setup.device)
            line.update(status="ok", figures=fn(setup))
    except SectionSkipped as e:
        line.update(status="skipped", reason=str(e))
    except (Exception, DeadlineReached) as e:  # every failure becomes this section's line
        line.update(status="error", error=f"{type(e).__name__}: {e}"[:2000],
                    traceback=traceback.format_exc()[-TRACEBACK_CHARS:])
    line["seconds"] = round(time.perf_counter() - start, 2)
    return {**line, **_memory(setup)}


def _figure(lines: dict[str, dict[str, Any]], section: str, *path: str) -> Any:
    value: Any = lines.get(section, {}).get("figures")
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def targets(setup: Setup, lines: dict[str, dict[str, Any]]) -> dict[str, bool | None]:
    """The lead's targets, None where the figure is missing (its section failed or was skipped)."""
    dynamic = _figure(lines, "eager_decode", setup.target_shape, "dynamic", "tokens_per_s")
    statics = [_figure(lines, "eager_decode", name, "static", "tokens_per_forward") for name in setup.shape_names]
    differing = _figure(lines, "graphs_exactness", "differing_tokens_replayed")
    return {
        f"{setup.target_shape}_dynamic_tokens_per_s_at_least_{TARGET_TOKENS_PER_S:.0f}":
            None if dynamic is None else dynamic >= TARGET_TOKENS_PER_S,
        "static_tokens_per_forward_exactly_1": None if None in statics else all(s == 1.0 for s in statics),
        "graphs_fp32_greedy_tokens_identical": None if differing is None else differing == 0,
    }


class _Lines:
    """The JSON lines written so far, under a lock: the hang watchdog writes from its own thread."""

    def __init__(self, setup: Setup, sections: tuple[tuple[str, Section], ...], out: TextIO) -> None:
        self.setup, self.sections, self.out = setup, sections, out
        self.lines: dict[str, dict[str, Any]] = {}
        self.running: str | None = None
        self.lock = threading.Lock()
        self.start = time.perf_counter()

    def add(self, line: dict[str, Any]) -> None:
        self.lines[line["section"]] = line
        self.out.write(json.dumps(line, default=str) + "\n")
        self.out.flush()

    def finish(self) -> None:
        """Every section not yet written as skipped at the deadline, then the summary."""
        for name, _ in self.sections:
            if name not in self.lines:
                self.add({"section": name, "status": "skipped", "reason": "deadline"})
        summary: dict[str, Any] = {"section": "summary", "seconds": round(time.perf_counter() - self.start, 1),
                                   "smoke": self.setup.smoke, "batch": self.setup.batch, "prompt": self.setup.prompt,
                                   "new_tokens": self.setup.new, "block": BLOCK, "steps_per_block": STEPS}
        for status in ("ok", "error", "skipped"):
            summary[status] = [name for name, line in self.lines.items() if line["status"] == status]
        summary["targets"] = targets(self.setup, self.lines)
        self.add(summary)

    def hung(self, grace_s: float) -> None:
        """The watchdog: the running section ignored the deadline alarm for grace_s (a call into
        C++ that never returns: a hung kernel, NCCL). Write its line with the main thread's stack,
        the rest and the summary, and end the process, which nothing else could stop short of an
        outer timeout that would lose the summary too."""
        with self.lock:
            if "summary" in self.lines:
                return
            if self.running is not None:
                frame = sys._current_frames().get(threading.main_thread().ident)
                stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
                self.add({"section": self.running, "status": "error",
                          "error": f"Hung: no return {grace_s:.0f} s after the deadline alarm",
                          "traceback": stack[-TRACEBACK_CHARS:]})
            self.finish()
            os._exit(3)


def run_checks(setup: Setup, sections: tuple[tuple[str, Section], ...], deadline_s: float, out: TextIO,
               hang_grace_s: float = 15.0) -> dict[str, dict[str, Any]]:
    """Run the sections in order, each line written to `out` as it ends; a section running at
    `deadline_s` (seconds from now) is interrupted and the later ones are skipped. One that does
    not return within `hang_grace_s` after that ends the process once the summary is written.
    Returns the lines by section, the summary included."""
    run = _Lines(setup, sections, out)
    watchdog = threading.Timer(deadline_s + hang_grace_s, run.hung, args=(hang_grace_s,))
    watchdog.daemon = True
    watchdog.start()
    try:
        for name, fn in sections:
            left = deadline_s - (time.perf_counter() - run.start)
            if left <= 0:
                break
            run.running = name
            line = run_section(name, fn, setup, left)
            with run.lock:
                run.running = None
                run.add(line)
        with run.lock:
            run.finish()
    finally:
        watchdog.cancel()
    return run.lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny shapes: checks the script itself")
    ap.add_argument("--deadline", type=float, default=440.0,
                    help="seconds after which no section starts and a running one is stopped (default fits "
                         "`timeout 470` with time for the interpreter start and the summary)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--prompt", type=int, default=64, help="prompt tokens (a multiple of the block size 4)")
    ap.add_argument("--new", type=int, default=256, help="response tokens per row")
    ap.add_argument("--sections", default=",".join(name for name, _ in SECTIONS),
                    help="comma-separated sections to run, in the check's order (default: all)")
    args = ap.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        ap.error("no CUDA device: run with --smoke on a CPU")
    wanted = set(args.sections.split(","))
    unknown = wanted - set(dict(SECTIONS))
    if unknown:
        ap.error(f"--sections: unknown {sorted(unknown)}; choose from {[name for name, _ in SECTIONS]}")
    # Only the JSON lines go to stdout: whatever else prints there (DeepSpeed's logger, NCCL, C++
    # code) is sent to stderr, so stdout stays one parseable line per section.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    if args.smoke:  # tiny shapes gain nothing from intra-op threads and lose much on a shared machine
        torch.set_num_threads(1)
    torch.manual_seed(0)
    sections = tuple((name, fn) for name, fn in SECTIONS if name in wanted)
    run_checks(setup_for(args.smoke, args.batch, args.prompt, args.new), sections, args.deadline, out)


if __name__ == "__main__":
    main()
