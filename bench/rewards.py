"""Reward throughput and the sandbox's hostile battery. Prints one JSON line.

programs_per_s: trivial passing function-style programs (3 asserts each) at full concurrency.
math_checks_per_s: answers that need math_verify (not the string fast path), concurrently.
attacks / escapes / processes_left: the hostile battery of tests/rewards/hostile_programs.py on
the chosen backend (escapes and sandbox processes left after it must be 0).
p99_math_check_s: per-check latency over the adversarial math inputs (bound: timeout + 0.5 s).

    python bench/rewards.py
    python bench/rewards.py --quick
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this file is rewards.py too: the package must win

from bench.common import REPO, bench_parser, emit  # noqa: E402
from rewards import CodeReward, MathReward, score_batch  # noqa: E402
from rewards.code_reward import shared_sandbox  # noqa: E402
from tests.rewards.hostile_programs import ADVERSARIAL_MATH, run_battery  # noqa: E402

ADD_ROW = {"test_method": "function", "test_time_limit": 2,
           "test_list": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(5, 5) == 10"]}
ADD_RESPONSE = "```python\ndef add(a, b):\n    return a + b\n```"


def programs_per_s(n: int, concurrency: int, backend: str) -> tuple[float, float]:
    reward = CodeReward(default_time_limit=2.0, backend=backend)
    score_batch(reward, [ADD_RESPONSE] * concurrency, [ADD_ROW] * concurrency, concurrency)  # warm-up
    start = time.perf_counter()
    out = score_batch(reward, [ADD_RESPONSE] * n, [ADD_ROW] * n, concurrency)
    elapsed = time.perf_counter() - start
    return n / elapsed, sum(o["correct"] for o in out) / n


def sandbox_start_ms(n: int, backend: str) -> float:
    """Median wall time of one sandbox running an empty program, sequentially."""
    sandbox = shared_sandbox(backend)
    times = [sandbox.run({"mode": "stdio", "program": "pass", "key": "00" * 32}).wall_s for _ in range(n)]
    return 1000 * statistics.median(times)


def math_checks_per_s(n: int, concurrency: int, reward: MathReward) -> tuple[float, float]:
    responses = [f"\\boxed{{\\frac{{{k}}}{{8}}}}" for k in range(n)]
    rows = [{"ground_truth_answer": str(k / 8)} for k in range(n)]
    score_batch(reward, responses[:concurrency], rows[:concurrency], concurrency)  # warm-up
    start = time.perf_counter()
    out = score_batch(reward, responses, rows, concurrency)
    elapsed = time.perf_counter() - start
    return n / elapsed, sum(o["correct"] for o in out) / n


def adversarial_latencies(reward: MathReward, repeats: int) -> list[float]:
    latencies = []
    for _ in range(repeats):
        for text in ADVERSARIAL_MATH.values():
            start = time.perf_counter()
            reward(text, {"ground_truth_answer": "3"})
            latencies.append(time.perf_counter() - start)
    return latencies


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def main() -> None:
    ap = bench_parser(__doc__, quick="fewer programs and checks, one repeat")
    ap.add_argument("--concurrency", type=int, default=2 * (os.cpu_count() or 1))
    ap.add_argument("--math-timeout", type=float, default=2.0)
    ap.add_argument("--backend", default="auto", choices=("auto", "bwrap", "unshare"))
    args = ap.parse_args()
    programs, checks, repeats = (24, 24, 1) if args.quick else (200, 200, 3)

    math_reward = MathReward(timeout=args.math_timeout, workers=os.cpu_count() or 1, max_answer_chars=10**6)
    prog_rate, prog_ok = programs_per_s(programs, args.concurrency, args.backend)
    math_rate, math_ok = math_checks_per_s(checks, args.concurrency, math_reward)
    latencies = adversarial_latencies(math_reward, repeats)
    verdicts, left = run_battery(CodeReward(default_time_limit=1.0, backend=args.backend), REPO)
    emit({
        "programs_per_s": round(prog_rate, 1),
        "programs_correct_frac": prog_ok,
        "sandbox_start_ms": round(sandbox_start_ms(10 if args.quick else 30, args.backend), 1),
        "sandbox_backend": shared_sandbox(args.backend).backend,
        "math_checks_per_s": round(math_rate, 1),
        "math_correct_frac": math_ok,
        "math_timeout_s": args.math_timeout,
        "p99_math_check_s": round(p99(latencies), 3),
        "max_math_check_s": round(max(latencies), 3),
        "attacks": len(verdicts),
        "escapes": sum(not v.contained for v in verdicts),
        "escaped": [f"{v.name}: {v.detail}" for v in verdicts if not v.contained],
        "max_hostile_reward": max(v.reward for v in verdicts),
        "processes_left": len(left),
        "concurrency": args.concurrency,
        "cpus": os.cpu_count(),
        "quick": args.quick,
    })


if __name__ == "__main__":
    main()
