"""Chaos: a short run of the tiny config with a seeded schedule of killed actors, against the same
run without faults.

Each fault kills one named actor of one pool (every pool the run has: rollout, reward, learner, the
judge pool when a reward uses a judge, and any pool added later) during a chosen step, at the run's
hook points (actors/hooks.py; nothing of the run is patched): a rollout worker once its shard of
the step is in flight, a learner rank as the step's update is handed out (a delayed kill could land after a short
update, or be cancelled with the run's end, and the fault would never be met), any other
(stateless) pool's worker a seeded delay after the step's rollout started. Rollout/reward workers
are restarted by Ray and their work re-issued; a dead learner rank makes the driver recreate the
group from the last checkpoint and replay. Prints one JSON line: faults injected and survived, prompts lost or
double-counted (each step's requested (prompt, sample) pairs against what came back scored, and
each step logged exactly once), whether every per-step metric equals the fault-free run's, and
the wall time of both runs.

    python bench/chaos.py            # 8 steps, 2 faults per pool, 2 DeepSpeed ZeRO-2 learner ranks
    python bench/chaos.py --quick    # 3 steps, 1 fault per pool (what the test suite runs)
    python bench/chaos.py --nodes    # node faults on a simulated cluster: bench/chaos_nodes.py
"""
from __future__ import annotations

import random
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's packages, not bench/learner.py

from actors import driver  # noqa: E402
from actors.config import PoolSection, RunConfig  # noqa: E402
from actors.configure import compose_config  # noqa: E402
from actors.hooks import RunHooks  # noqa: E402
from actors.metrics import read_jsonl  # noqa: E402
from actors.start import namespace_for  # noqa: E402
from bench.common import REPO, bench_parser, emit  # noqa: E402
from rewards.result import Score  # noqa: E402
from rollout.requests import PromptRecord  # noqa: E402
from rollout.trajectory_batch import RowMeta  # noqa: E402

# Partial credit, so that a random tiny model's groups have advantages and every step updates.
DENSE_REWARD = "tests.actors.digit_reward:reward"
# Figures that differ between equal runs: timings, and the fault handling itself (re-issued work,
# restarts, the weight bytes a re-sync sends again).
NOT_COMPARED = ("_s", "tokens_per_s", "reissued", "restarts", "sync_bytes")
NOT_COMPARED_GROUPS = ("cluster/", "pool/")  # the cluster's nodes and pool sizes


@dataclass(frozen=True)
class Fault:
    step: int  # 1-based training step during which the actor is killed
    pool: str  # a `cluster` pool: rollout, reward, learner, ...
    index: int  # worker / rank within the pool
    delay_s: float = 0.0  # stateless pools: after the step's rollout was handed out


def pool_names(cfg: RunConfig) -> list[str]:
    """Every worker pool the run creates (a pool added to `cluster` joins the schedule by itself;
    the judge pool exists only when a reward uses a judge)."""
    return [name for name, section in cfg.cluster if isinstance(section, PoolSection)
            and (section is not cfg.cluster.judge or cfg.reward.judged)]


def schedule(cfg: RunConfig, per_pool: int, seed: int) -> list[Fault]:
    """`per_pool` faults for every pool at seeded steps, workers and delays. Steps 2..steps-1: the
    first step has warmed up every pool, and a kill landing after its step's work is still met
    by the next step (a run that already finished would survive any fault)."""
    rng = random.Random(seed)
    last = cfg.trainer.steps - 1
    if last < 2:
        raise ValueError(f"trainer.steps={cfg.trainer.steps}: a chaos run needs at least 3 steps")
    faults = [Fault(rng.randint(2, last), pool, rng.randrange(getattr(cfg.cluster, pool).num_workers),
                    round(rng.uniform(0.0, 0.5), 2))
              for pool in pool_names(cfg) for _ in range(per_pool)]
    return sorted(faults, key=lambda f: (f.step, f.pool))


@dataclass
class Injector(RunHooks):
    """Kills the scheduled actors from inside a run driven in this process, at the run's hook points
    (actors/hooks.py), and accounts every step's prompts."""
    faults: list[Fault]
    namespace: str
    fired: list[Fault] = field(default_factory=list)
    lost: int = 0
    duplicated: int = 0
    reissued: int = 0  # calls re-issued after a worker died, over every attempt of every step
    step: int = 0
    timers: list[threading.Timer] = field(default_factory=list)

    def _due(self, pools: set[str] | None) -> list[Fault]:
        """Faults of `pools` (None: the stateless ones) due by this step; a learner fault whose step
        made no update lands in the next update."""
        todo = [f for f in self.faults if f.step <= self.step and f not in self.fired
                and (f.pool in pools if pools is not None else f.pool not in ("rollout", "learner"))]
        self.fired += todo
        return todo

    def _kill_later(self, fault: Fault, delay_s: float) -> None:
        timer = threading.Timer(delay_s, self._kill, (fault,))
        timer.start()
        self.timers.append(timer)

    def _kill(self, fault: Fault) -> None:
        try:
            actor = ray.get_actor(f"{fault.pool}-{fault.index}", namespace=self.namespace)
        except ValueError:  # the pool does not exist in this run
            self.fired.remove(fault)
            return
        ray.kill(actor, no_restart=fault.pool == "learner")  # learners are recreated by the driver

    def step_started(self, step: int) -> None:
        self.step = step

    def rollout_submitted(self) -> None:
        for f in self._due({"rollout"}):
            self._kill(f)  # its shard is in flight
        for f in self._due(None):
            self._kill_later(f, f.delay_s)

    def rollout_collected(self, records: list[PromptRecord], rows: list[RowMeta],
                          scores: dict[tuple[str, int], Score], reissued: int) -> None:
        want = Counter((r.uid, r.sample_idx) for r in records)
        got = Counter(m.key for m in rows if m.key in scores)
        self.lost += sum((want - got).values())
        self.duplicated += sum((got - want).values())
        self.reissued += reissued

    def update_starting(self) -> None:
        for f in self._due({"learner"}):
            self._kill(f)  # the update is handed out right after this returns

    def stop(self) -> None:
        for timer in self.timers:
            timer.cancel()


def comparable(lines: list[dict]) -> dict[int, dict[str, float]]:
    """Per training step, the figures two equal runs share."""
    return {r["step"]: {k: v for k, v in r.items()
                        if not k.endswith(NOT_COMPARED) and not k.startswith(NOT_COMPARED_GROUPS)}
            for r in lines if "reward_mean" in r}


def differences(got: dict[int, dict[str, float]], want: dict[int, dict[str, float]], rel: float = 1e-6) -> list[str]:
    """`step:key` of every figure that differs (beyond float rounding) or is missing on one side."""
    out = [f"{s}:missing" for s in sorted(set(want) ^ set(got))]
    for s in sorted(set(want) & set(got)):
        for k in sorted(set(want[s]) | set(got[s])):
            a, b = got[s].get(k), want[s].get(k)
            if a is None or b is None or abs(a - b) > rel * max(1.0, abs(b)):
                out.append(f"{s}:{k}")
    return out


def overrides(quick: bool, run_dir: Path) -> list[str]:
    """The tiny config, small. --quick: 3 steps, one reward worker and one plain-torch learner rank
    (fewer actor processes to start, twice); else 8 steps, two of each, DeepSpeed ZeRO-2 learners."""
    size = (["trainer.steps=3", "trainer.checkpoint_every=1", "cluster.reward.num_workers=1",
             "cluster.learner.num_workers=1", "engine.backend=torch"] if quick else
            ["trainer.steps=8", "trainer.checkpoint_every=2", "cluster.reward.num_workers=2",
             "cluster.learner.num_workers=2", "engine.backend=deepspeed", "engine.zero_stage=2"])
    return [f"trainer.run_dir={run_dir}", "trainer.prompts_per_step=4", "trainer.responses_per_prompt=4",
            "rollout.max_new_tokens=16", "trainer.eval_every=0", "task.train_size=200", f"task.reward={DENSE_REWARD}",
            "trainer.progress=false", "trainer.plot=false", "trainer.logger=[]", "warmup.steps=0", "engine.lr=1e-2",
            "engine.schedule=constant", "engine.warmup_steps=0", "cluster.rollout.num_workers=2",
            "trainer.max_learner_restarts=4", *size]


def run_chaos(work: Path, quick: bool = True, seed: int = 0) -> dict[str, Any]:
    """Both runs on the connected Ray cluster; the bench's JSON figures."""
    clean_cfg = compose_config(overrides(quick, work / "fault_free"))
    start = time.perf_counter()
    driver.run_to_end(clean_cfg)
    clean_s = time.perf_counter() - start
    cfg = compose_config(overrides(quick, work / "chaos"))
    injector = Injector(schedule(cfg, 1 if quick else 2, seed), namespace_for(cfg, work / "chaos"))
    start = time.perf_counter()
    error = None
    try:
        run = driver.run_to_end(cfg, hooks=injector)
    except Exception as err:  # reported, not raised: the figures say what was survived
        error, run = f"{type(err).__name__}: {err}", None
    finally:
        injector.stop()
    chaos_s = time.perf_counter() - start
    lines = read_jsonl(work / "chaos" / "metrics.jsonl")
    logged = Counter(r["step"] for r in lines if "reward_mean" in r)
    per_step = cfg.trainer.prompts_per_step * cfg.trainer.responses_per_prompt
    missing = [s for s in range(1, cfg.trainer.steps + 1) if s not in logged]
    chaos, clean = comparable(lines), comparable(read_jsonl(work / "fault_free" / "metrics.jsonl"))
    return {"faults_injected": len(injector.fired), "faults_survived": len(injector.fired) if error is None else 0,
            "prompts_lost": injector.lost + per_step * len(missing),
            "prompts_double_counted": injector.duplicated + per_step * sum(n - 1 for n in logged.values()),
            "metrics_equal_to_fault_free": error is None and not differences(chaos, clean),
            "metrics_differing": differences(chaos, clean)[:8],
            "learner_restarts": run.learner.restarts if run else None,
            "reissued": injector.reissued,
            "fault_free_s": round(clean_s, 2), "chaos_s": round(chaos_s, 2), "steps": cfg.trainer.steps,
            "schedule": [f"{f.pool}-{f.index}@step{f.step}" for f in injector.faults], "error": error}


def main() -> None:
    ap = bench_parser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nodes", action="store_true", help="node kill, preemption and node added (chaos_nodes.py)")
    args = ap.parse_args()
    if args.nodes:
        from bench.chaos_nodes import node_schedule, run_node_chaos

        steps = 6 if args.quick else 8
        with tempfile.TemporaryDirectory() as tmp:
            emit(run_node_chaos(Path(tmp), node_schedule(steps, args.seed), steps))
        return
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            emit(run_chaos(Path(tmp), args.quick, args.seed))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
