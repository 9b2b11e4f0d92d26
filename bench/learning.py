"""Which RL objective teaches the tiny model most, from one SFT warm start, at equal RL steps, and
how steadily: over seeds, the mean and std of the gain and of the late decline.

    python bench/learning.py            # 6 algorithms, tracerl_value_process, the continued-SFT control, 3 seeds
    python bench/learning.py --algos tracerl tracerl_value --steps 100 --no-sft   # the value model's claim
    python bench/learning.py --algos tracerl_value tracerl_value_process --no-sft   # the process-reward pair
    python bench/learning.py --algos tracerl_value_reward --steps 100 --no-sft   # the value model on raw rewards
    python bench/learning.py --quick    # 1 seed, a few steps, a smaller held-out set

Every run is the default `python launch.py` job (tiny model, built-in `arith`, static decoding,
32 prompts x 8 responses per step) started from the same cached warm start (the one the default run
uses, made first if missing), for --steps RL steps with trainer.seed = each seed, and with
algo.advantage.refill_rounds = --refill-rounds for every objective (default 0: the objectives learn
from equal batches, where the default job's TraceRL samples dynamically, 4 rounds). Held-out accuracy
is greedy on the same --eval-prompts questions for every run (task.split_seed is fixed), before,
every --eval-every steps and after. `continued_sft` spends TraceRL's mean wall time on more SFT from
the same warm start, on the same rows the warm start learned from (mode=sft, trainer.max_wall_s). The
final TraceRL models are also decoded with dynamic decoding.

`tracerl_value_process` adds the arith rule-based process reward (reward=arith_process) to
`tracerl_value`; `tracerl_process` (on request) adds it to TraceRL as a summed reward;
`tracerl_value_reward` (on request) trains the value model on the raw outcome reward instead of the
group-normalised advantage (algo.value.outcome=reward).

Prints ONE JSON line: per objective {acc_before, acc_after, gain, gain_std, acc_best, decline,
decline_std, seconds, step_s} (means over seeds, std = population std over seeds; decline =
best held-out accuracy of the run minus its last; step_s = mean RL step, the sum of its stage times)
plus the per-seed values and held-out curves; for a value-model row, explained_var: the value
model's explained variance (before each update) averaged over each evaluation interval, per seed;
<row>_overhead = step_s of the process row / step_s of its row without the process reward - 1 (the
rule scores every chunk prefix in the reward workers, inside rollout_s), and dynamic_tokens_per_forward /
static_minus_dynamic_acc of the final TraceRL
models (means over seeds). Run directories are left under --out.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
from pathlib import Path

import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.configure import compose_config  # noqa: E402
from actors.driver import run_to_end  # noqa: E402
from actors.metrics import read_jsonl  # noqa: E402
from actors.modes import mode_for  # noqa: E402
from actors.start import model_path  # noqa: E402
from bench.common import bench_parser, emit  # noqa: E402
from launch import connect_ray  # noqa: E402

# row -> overrides; the process rows add the arith rule-based process reward (reward=arith_process):
# per-token rewards into the value model, or the summed reward without one.
ROWS = {
    name: [f"algo={name}"]
    for name in ("tracerl", "tracerl_value", "agrpo", "diffu_grpo", "coupled_grpo", "random_masking")
}
ROWS |= {
    "tracerl_value_process": ["algo=tracerl_value", "reward=arith_process"],
    "tracerl_process": ["algo=tracerl", "reward=arith_process"],
    "tracerl_value_reward": ["algo=tracerl_value", "algo.value.outcome=reward"],
}
DEFAULT_ROWS = (
    "tracerl",
    "tracerl_value",
    "tracerl_value_process",
    "agrpo",
    "diffu_grpo",
    "coupled_grpo",
    "random_masking",
)
STAGES = ("rollout_s", "advantage_s", "update_s", "sync_s")
QUIET = [
    "trainer.progress=false",
    "trainer.plot=false",
    "trainer.resume=never",
    "trainer.checkpoint_every=0",
    "ray.include_dashboard=false",
]


def warm_start() -> Path:
    """The default run's cached warm start (trained now if no run has cached it yet)."""
    cfg = compose_config(QUIET + ["trainer.steps=0", "trainer.eval_every=0", "trainer.run_dir=runs/bench_warm"])
    path = mode_for(cfg).warm_dir(cfg, model_path(cfg, Path(cfg.trainer.run_dir)))
    if not (path / "config.json").is_file():
        with contextlib.redirect_stdout(sys.stderr):
            run_to_end(cfg)
    return path


def summary_of(overrides: list[str], eval_every: int) -> dict[str, float]:
    """The run's summary.json plus its held-out curve, best and last accuracy, its mean RL
    step time (sum of the stage times) and, with a value model, its explained variance averaged
    over each evaluation interval."""
    with contextlib.redirect_stdout(sys.stderr):  # each run's table: stdout carries only the JSON line
        run = run_to_end(compose_config(overrides))
    out = json.loads((run.run_dir / "summary.json").read_text())
    rows = read_jsonl(run.run_dir / "metrics.jsonl")
    curve = {int(r["step"]): r["eval/accuracy"] for r in rows if "eval/accuracy" in r}
    out["curve"] = [[step, round(acc, 4)] for step, acc in sorted(curve.items())]
    if curve:
        out["best"], out["decline"] = max(curve.values()), max(curve.values()) - curve[max(curve)]
    steps = [r for r in rows if "rollout_s" in r]
    if steps:
        out["step_s"] = statistics.fmean(sum(r.get(k, 0.0) for k in STAGES) for r in steps)
    ev: dict[int, list[float]] = {}
    for r in rows:
        if "learner/value_explained_var" in r:  # steps 1..eval_every → interval eval_every, ...
            ev.setdefault(-(-int(r["step"]) // eval_every) * eval_every, []).append(r["learner/value_explained_var"])
    if ev:
        out["explained_var"] = [[step, round(statistics.fmean(v), 4)] for step, v in sorted(ev.items())]
    return out


def mean_over_seeds(runs: list[dict[str, float]]) -> dict[str, object]:
    mean = lambda key: round(statistics.fmean(r[key] for r in runs), 4)  # noqa: E731
    std = lambda values: round(statistics.pstdev(values), 4)  # noqa: E731
    gains = [r["acc_after"] - r["acc_before"] for r in runs]
    out = {
        "acc_before": mean("acc_before"),
        "acc_after": mean("acc_after"),
        "gain": round(statistics.fmean(gains), 4),
        "gain_std": std(gains),
        "seconds": mean("wall_s"),
        "steps": mean("steps"),
        "acc_after_per_seed": [r["acc_after"] for r in runs],
    }
    if all("decline" in r for r in runs):
        declines = [r["decline"] for r in runs]
        out |= {"acc_best": mean("best"), "decline": mean("decline"), "decline_std": std(declines),
                "decline_max": round(max(declines), 4), "curves": [r["curve"] for r in runs]}
    if all("explained_var" in r for r in runs):
        out["explained_var"] = [r["explained_var"] for r in runs]
    if all("step_s" in r for r in runs):
        out["step_s"] = mean("step_s")
    return out


def main() -> None:
    ap = bench_parser(__doc__, quick="1 seed, 4 steps, 64 held-out prompts")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--eval-prompts", type=int, default=1024)
    ap.add_argument("--eval-every", type=int, default=None, help="default: a quarter of --steps")
    ap.add_argument("--algos", nargs="+", default=list(DEFAULT_ROWS), choices=list(ROWS))
    ap.add_argument("--no-sft", action="store_true", help="skip the continued-SFT control")
    ap.add_argument("--refill-rounds", type=int, default=0,
                    help="dynamic sampling (algo.advantage.refill_rounds) for every objective (default job's "
                         "TraceRL: 4)")
    ap.add_argument("--out", default="runs/bench_learning")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.seeds, args.eval_prompts = 4, [0], 64
    eval_every = args.eval_every or max(args.steps // 4, 1)

    default = compose_config(QUIET)
    sft_rows = default.warmup.train_size or default.task.train_size  # the warm start's SFT data
    connect_ray(default)
    try:
        warm = warm_start()
        common = QUIET + [f"model.path={warm}", "warmup.steps=0", f"trainer.eval_prompts={args.eval_prompts}"]
        runs: dict[str, list[dict[str, float]]] = {}
        for algo in args.algos:
            runs[algo] = [
                summary_of(
                    common
                    + ROWS[algo]
                    + [
                        f"trainer.seed={seed}",
                        f"algo.advantage.refill_rounds={args.refill_rounds}",
                        f"trainer.steps={args.steps}",
                        f"trainer.eval_every={eval_every}",
                        f"trainer.run_dir={args.out}/{algo}_seed{seed}",
                    ],
                    eval_every,
                )
                for seed in args.seeds
            ]
        budget = statistics.fmean(r["wall_s"] for r in runs.get("tracerl") or next(iter(runs.values())))
        sft_seeds = [] if args.no_sft else args.seeds
        runs["continued_sft"] = [
            summary_of(
                common
                + [
                    "mode=sft",
                    f"task.train_size={sft_rows}",
                    f"trainer.seed={seed}",
                    "trainer.steps=1000000",
                    "trainer.eval_every=1000000",
                    f"trainer.max_wall_s={budget}",
                    f"trainer.run_dir={args.out}/continued_sft_seed{seed}",
                ],
                eval_every,
            )
            for seed in sft_seeds
        ]
    finally:
        ray.shutdown()

    result: dict[str, object] = {
        "steps": args.steps,
        "seeds": args.seeds,
        "eval_prompts": args.eval_prompts,
        "eval_every": eval_every,
        "warm_start": str(warm),
    }
    result |= {name: mean_over_seeds(rs) for name, rs in runs.items() if rs}
    # The rule process reward's cost: its row's step time over the same objective's without it.
    for name, pair in (("tracerl_process", "tracerl"), ("tracerl_value_process", "tracerl_value")):
        if result.get(name, {}).get("step_s") and result.get(pair, {}).get("step_s"):
            result[f"{name}_overhead"] = round(result[name]["step_s"] / result[pair]["step_s"] - 1, 4)
    if "tracerl" in runs:
        final = runs["tracerl"]
        result["dynamic_tokens_per_forward"] = round(
            statistics.fmean(r["dynamic_tokens_per_forward"] for r in final), 3
        )
        result["static_minus_dynamic_acc"] = round(
            statistics.fmean(r["static_acc"] - r["dynamic_acc"] for r in final), 4
        )
    emit(result)


if __name__ == "__main__":
    main()
