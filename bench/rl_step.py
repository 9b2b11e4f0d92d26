"""RL step time, synchronous vs one-step off-policy (rollout of step k+1 overlapping update k).

Runs the default job twice through launch.py from one cached warm start, `async.max_staleness`
0 and 1, and prints one JSON line with per-phase seconds (mean per step) and
`async_speedup` = sync step time ÷ async step time. One rollout worker and one learner rank, one
thread each: on a 2-core machine each phase then has a core of its own while they overlap (with
the default two rollout workers, three threads would share two cores and overlap gains nothing).

    python bench/rl_step.py            # 12 RL steps per mode
    python bench/rl_step.py --quick    # 4 steps
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, bench_parser, emit  # noqa: E402

PHASES = ("rollout_s", "advantage_s", "update_s", "sync_s")


def run(mode: int, steps: int, work: Path) -> dict[str, float]:
    run_dir = work / f"staleness{mode}"
    overrides = [f"trainer.run_dir={run_dir}", f"trainer.steps={steps}", "trainer.eval_every=0",
                 "trainer.checkpoint_every=0", "trainer.progress=false", "trainer.plot=false",
                 f"async.max_staleness={mode}", f"warmup.cache_dir={work / 'warm'}", "warmup.steps=150",
                 "cluster.rollout.num_workers=1", "cluster.learner.cpus_per_worker=1",
                 "algo.advantage.refill_rounds=0", "ray.include_dashboard=false"]  # dynamic sampling: lockstep only
    subprocess.run([sys.executable, "launch.py", *overrides], cwd=REPO, check=True, capture_output=True)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    per_step = [r for r in lines if r["step"] > 1 and "rollout_s" in r]  # step 1 has nothing to overlap
    out = {p: sum(r.get(p, 0.0) for r in per_step) / len(per_step) for p in PHASES}
    out["step_s"] = sum(out[p] for p in PHASES)
    out["staleness"] = sum(r.get("staleness", 0.0) for r in per_step) / len(per_step)
    return {k: round(v, 3) for k, v in out.items()}


def main() -> None:
    ap = bench_parser()
    args = ap.parse_args()
    steps = 4 if args.quick else 12
    with tempfile.TemporaryDirectory() as tmp:
        sync, overlapped = run(0, steps, Path(tmp)), run(1, steps, Path(tmp))
    emit({"sync": sync, "async": overlapped, "steps": steps,
          "async_speedup": round(sync["step_s"] / overlapped["step_s"], 3)})


if __name__ == "__main__":
    main()
