"""Driver-side cost of one RL step's data path, trajectories through the driver vs left in the
object store (issue #14 item 7), one JSON line.

Both paths run the same step on Ray: stub rollout workers return `--responses` synthetic
trajectories of `--tokens` response tokens (prompts of `--prompt` tokens, `--group` samples per
prompt), stub reward workers score them (reward = sample index parity: every group is kept),
group advantages are computed, and stub learner ranks rebuild their shard's trajectories and
report rows, tokens and a checksum of the response ids (equal on both paths, or the bench fails).

- `lists` (the data path of commit 29d6d27): each shard's `list[Trajectory]` is fetched by the
  driver, pickled again to the reward workers and again, sharded, to the learner ranks.
- `columns` (this code): `actors.rollout_group.RolloutGroup.submit/collect`,
  `actors.step_batch.to_groups`, `actors.learner_group.learner_shards` and `LearnerWorker.rl_step`
  as the driver runs them; the rollout stub returns through `actors.rollout_worker.shard_result`
  (RowMeta + TrajectoryBatch), and the driver only fetches RowMeta.

Each path runs in its own process (fresh driver, fresh Ray): one warm-up step, then `--repeats`
measured steps. Figures per path: the seconds the driver process spends (`driver_cpu_s`:
process_time, every thread of the driver, Ray's included) and the step's wall seconds as the
driver waits for it (`driver_wall_s`, with its phases), fastest of the repeats; the driver's RSS
high-water growth over the steps and the tracemalloc peak of one further step. Ratios, lists ÷
columns: `driver_s_before_over_after` (driver seconds) and `step_wall_before_over_after` (the
wall also holds the actors' work on the critical path, which both paths share: building and
reading the payloads, Ray's task round trips).

    python bench/driver.py            # 512 responses x 2,048 tokens
    python bench/driver.py --quick    # 64 responses x 256 tokens
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.configure import compose_config  # noqa: E402
from actors.learner_group import learner_shards  # noqa: E402
from actors.learner_worker import LearnerWorker  # noqa: E402
from actors.rollout_group import RolloutGroup, records_for, split  # noqa: E402
from actors.rollout_worker import shard_result  # noqa: E402
from actors.step_batch import to_groups  # noqa: E402
from actors.timer import StepTimer  # noqa: E402
from actors.weight_sync.registry import CPU, Senders  # noqa: E402
from actors.weights_source import Checkpoint  # noqa: E402
from bench.common import REPO, bench_parser, emit, synthetic  # noqa: E402
from learner.advantages import AdvantageConfig, AdvantageResult, ScoredGroup, group_advantages  # noqa: E402
from rewards.contract import ResponseScore, ScoreParts  # noqa: E402
from rewards.result import Score  # noqa: E402
from rollout.params import SamplingParams  # noqa: E402
from rollout.requests import PromptRecord  # noqa: E402
from rollout.rng import row_seed  # noqa: E402
from rollout.trajectory import Trajectory  # noqa: E402
from rollout.trajectory_batch import TrajectoryBatch  # noqa: E402

VOCAB, BLOCK, CHUNK = 151_936, 32, 16  # a real vocabulary; trainer.reward_chunk's default


class StubRollout:
    """Synthetic trajectories (made once per request, so the measured steps time the data path)."""

    def __init__(self, prompt: int, tokens: int) -> None:
        self.prompt, self.tokens = prompt, tokens
        self.cache: dict[tuple[str, int], Trajectory] = {}

    def version(self) -> int:
        return 0

    def _decode(self, shard: list[PromptRecord]) -> list[Trajectory]:
        for r in shard:
            if (r.uid, r.sample_idx) not in self.cache:
                self.cache[(r.uid, r.sample_idx)] = synthetic(1, self.prompt, self.tokens, BLOCK, VOCAB,
                                                              row_seed(0, r.uid, r.sample_idx))[0]
        return [self.cache[(r.uid, r.sample_idx)] for r in shard]

    @ray.method(num_returns=2)
    def generate(self, shard: list[PromptRecord], params: SamplingParams) -> Any:
        return shard_result(self._decode(shard), shard, 0)

    def generate_lists(self, shard: list[PromptRecord], params: SamplingParams) -> list[Trajectory]:
        trajs = self._decode(shard)
        for t, r in zip(trajs, shard):  # stamped, as the rollout worker of 29d6d27 did
            t.policy_version, t.prompt_uid, t.sample_idx = 0, r.uid, r.sample_idx
        return trajs


def parity(uid: str, k: int) -> Score:
    return Score(uid, k, float(k % 2), bool(k % 2))


class StubReward:
    def score(self, batch: TrajectoryBatch, which: list[int], task_rows: list[dict], parts: ScoreParts) -> list[Any]:
        return [ResponseScore(*batch.key(i), parity(*batch.key(i))) for i in which]

    def score_lists(self, trajs: list[Trajectory], rows: list[dict]) -> list[Score]:
        return [parity(t.prompt_uid, t.sample_idx) for t in trajs]


class CountingUpdater:
    def rl_step(self, trajs: list[Trajectory], advantages: list[float], step: int) -> dict[str, int]:
        return {"rows": len(trajs), "tokens": sum(len(t.response_ids) for t in trajs),
                "checksum": sum(sum(t.response_ids) for t in trajs)}


class StubLearner(LearnerWorker):
    """The real `rl_step` (fetch the rows, rebuild them) on an updater that only counts."""

    def __init__(self) -> None:  # no model, no process group, no weight-sync buffers
        self.updater, self.offloaded, self.senders = CountingUpdater(), False, Senders("stub", 1, CPU)

    def rl_step_lists(self, trajs: list[Trajectory], advantages: list[float], step: int) -> dict[str, int]:
        return self.updater.rl_step(trajs, advantages, step)


@dataclass
class Pools:
    rollout: list[Any]
    reward: list[Any]
    learner: list[Any]

    def __post_init__(self) -> None:  # the columns path's rollout side, over the stub actors
        self.group = RolloutGroup(compose_config([f"trainer.reward_chunk={CHUNK}"]), self.rollout, self.reward, [],
                                  Checkpoint(), encode=list)


def step_columns(pools: Pools, records: list[PromptRecord], rows: dict, params: SamplingParams,
                 timer: StepTimer) -> list[dict]:
    """The driver's data path now (actors/steps.py rollout → advantages → update)."""
    group = pools.group
    with timer("rollout_s"):
        samples, scores, _ = group.collect(group.submit(records, rows, params, group.route))
    with timer("advantage_s"):
        adv = group_advantages(to_groups(samples, scores), AdvantageConfig())
    with timer("update_s"):
        shards = learner_shards(adv, len(pools.learner))
        return ray.get([a.rl_step.remote(s.samples, s.advantages, s.process_rewards, 0)
                        for a, s in zip(pools.learner, shards)])


def step_lists(pools: Pools, records: list[PromptRecord], rows: dict, params: SamplingParams,
               timer: StepTimer) -> list[dict]:
    """The driver's data path of commit 29d6d27 (its collect, to_groups and learner_shards on
    Trajectory lists; no faults here, so their handling is left out)."""
    with timer("rollout_s"):
        trajs, scores = collect_lists(pools, records, rows, params)
    with timer("advantage_s"):
        by_uid: dict[str, list[Trajectory]] = defaultdict(list)
        for t in trajs:
            by_uid[t.prompt_uid].append(t)
        groups = []
        for uid, ts in by_uid.items():
            ts.sort(key=lambda t: t.sample_idx)
            s = [scores[(uid, t.sample_idx)] for t in ts]
            groups.append(ScoredGroup(uid, ts, [x.reward for x in s], [x.correct for x in s]))
        adv: AdvantageResult = group_advantages(groups, AdvantageConfig())
    with timer("update_s"):
        n = len(pools.learner)
        ranked = sorted(range(len(adv.samples)), key=lambda i: -(len(adv.samples[i].prompt_ids)
                                                                  + len(adv.samples[i].response_ids)))
        shards: list[tuple[list, list]] = [([], []) for _ in range(n)]
        for j, i in enumerate(ranked):
            shards[j % n][0].append(adv.samples[i])
            shards[j % n][1].append(adv.advantages[i])
        return ray.get([a.rl_step_lists.remote(tr, ad, 0) for a, (tr, ad) in zip(pools.learner, shards)])


def collect_lists(pools: Pools, records: list[PromptRecord], rows: dict,
                  params: SamplingParams) -> tuple[list[Trajectory], dict[tuple[str, int], Score]]:
    """29d6d27's collect: every shard's trajectories fetched here and sent on to the reward
    workers; the trajectories in request order (as its driver sorted them) and their scores."""
    queue = split(records, max(len(pools.rollout), -(-len(records) // (2 * params.max_batch_rows))))
    pending: dict[Any, tuple[str, int]] = {}  # ref -> (stage, worker)
    for w, actor in enumerate(pools.rollout):
        pending[actor.generate_lists.remote(queue.pop(0), params)] = ("rollout", w)
    trajs: list[Trajectory] = []
    scores: dict[tuple[str, int], Score] = {}
    worker = 0
    while pending:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        (stage, w), result = pending.pop(ref), ray.get(ref)
        if stage == "reward":
            scores.update({(s.prompt_uid, s.sample_idx): s for s in result})
            continue
        if queue:
            pending[pools.rollout[w].generate_lists.remote(queue.pop(0), params)] = ("rollout", w)
        trajs += result
        for i in range(0, len(result), CHUNK):
            part = result[i:i + CHUNK]
            r = worker % len(pools.reward)
            pending[pools.reward[r].score_lists.remote(part, [rows[t.prompt_uid] for t in part])] = ("reward", r)
            worker += 1
    order = {(r.uid, r.sample_idx): i for i, r in enumerate(records)}
    trajs.sort(key=lambda t: order[(t.prompt_uid, t.sample_idx)])
    return trajs, scores


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(path: str, responses: int, tokens: int, prompt: int, group: int, repeats: int) -> dict[str, Any]:
    """One path in this process: warm-up step, `repeats` timed steps, one traced step."""
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, object_store_memory=2 << 30,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}})
    try:
        actor = lambda cls, *a: ray.remote(cls).options(num_cpus=0).remote(*a)  # noqa: E731
        pools = Pools(learner=[actor(StubLearner) for _ in range(2)],
                      rollout=[actor(StubRollout, prompt, tokens) for _ in range(2)],
                      reward=[actor(StubReward) for _ in range(2)])
        uids = [f"p{i}" for i in range(responses // group)]
        records = records_for(uids, [[5] * prompt for _ in uids], group)
        rows = {u: {} for u in uids}
        params = SamplingParams()
        step = step_lists if path == "lists" else step_columns
        step(pools, records, rows, params, StepTimer())  # warm-up: the stubs make their trajectories, imports load
        rss0, wall, cpu, phases = rss_mb(), [], [], []
        for _ in range(repeats):
            timer = StepTimer()
            w0, c0 = time.perf_counter(), time.process_time()
            stats = step(pools, records, rows, params, timer)
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
            phases.append(timer.seconds)
        rss_growth = rss_mb() - rss0
        tracemalloc.start()
        step(pools, records, rows, params, StepTimer())
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        totals = {k: sum(s[k] for s in stats) for k in ("rows", "tokens", "checksum")}
        fastest = phases[wall.index(min(wall))]
        return {"driver_wall_s": round(min(wall), 4), "driver_cpu_s": round(min(cpu), 4),
                "driver_wall_s_all": [round(x, 3) for x in wall], "driver_cpu_s_all": [round(x, 3) for x in cpu],
                "wall_phases_s": {k: round(v, 3) for k, v in fastest.items()},
                "driver_rss_growth_mb": round(rss_growth, 1), "driver_traced_peak_mb": round(peak, 1), **totals}
    finally:
        ray.shutdown()


def main() -> None:
    ap = bench_parser(__doc__, quick="64 responses x 256 tokens", repeats=5)
    ap.add_argument("--path", choices=("lists", "columns"), help="measure one path in this process (internal)")
    args = ap.parse_args()
    responses, tokens, prompt, group = (64, 256, 64, 8) if args.quick else (512, 2048, 256, 8)
    if args.path:
        print(json.dumps(measure(args.path, responses, tokens, prompt, group, args.repeats)), flush=True)
        return
    load_before = os.getloadavg()
    out = {}
    for path in ("lists", "columns"):
        cmd = [sys.executable, __file__, "--path", path, "--repeats", str(args.repeats)] + (["--quick"] * args.quick)
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
        out[path] = json.loads(done.stdout.strip().splitlines()[-1])
    before, after = out["lists"], out["columns"]
    if any(before[k] != after[k] for k in ("rows", "tokens", "checksum")) or after["rows"] != responses:
        raise SystemExit(f"the paths delivered different rows to the learners: {before} vs {after}")
    emit({"responses": responses, "response_tokens": tokens, "prompt_tokens": prompt, "lists": before,
          "columns": after,
          "driver_s_before_over_after": round(before["driver_cpu_s"] / after["driver_cpu_s"], 2),
          "step_wall_before_over_after": round(before["driver_wall_s"] / after["driver_wall_s"], 2),
          "peak_mb_before": before["driver_traced_peak_mb"], "peak_mb_after": after["driver_traced_peak_mb"],
          "rss_growth_mb_before": before["driver_rss_growth_mb"], "rss_growth_mb_after": after["driver_rss_growth_mb"],
          "load_avg_1m": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]})


if __name__ == "__main__":
    main()
