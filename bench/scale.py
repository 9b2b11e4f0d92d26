"""The control plane at width: the driver's own cost of an RL step's rollout, weight-sync fan-out and
placement at 2, 8, 16, 32 (--workers) rollout workers on a simulated cluster.

A `ray.cluster_utils.Cluster` of simulated nodes (8 fake GPUs each) holds light stand-in rollout
workers with the rollout worker's interface (`generate` with two return values, RowMeta and a
TrajectoryBatch; `load_weights`) that sleep `--row-ms` per row instead of decoding, and two stand-in
reward workers. The driver side is the project's own (`RolloutGroup.submit`/`collect`: shards, the
reward route, accounting). Per worker count:

- step: `--rows` rows per worker (weak scaling), wall seconds, the driver's CPU seconds (its whole
  process: Python and Ray's core-worker threads), and overhead = wall − the actors' own work (the
  busiest worker's sleep);
- weight sync: the project's own publisher (`WeightPublisher`), senders and receivers carry a
  `--weights-mb` version of `--tensors` tensors (its index as large as a 7B model's) from a stand-in
  learner rank 0 on the head node to stand-in models in every worker: all workers on the head node
  (the same-node transport, shared memory: the learner copies each version into a slot once, and
  each worker's next `generate` makes its parameters views of it: `bind_ms`, a worker's own time
  for that, paid inside a call it gets anyway) and spread over the simulated nodes (object store:
  every worker is called to load it); and the same with a version of one 4-byte tensor (same node);
- placement: a placement group of one bundle per worker (SPREAD over the nodes) ready, and every
  worker created and answering.

Growth exponents: the least-squares slope of log(figure) against log(workers). Also the driver's
CPU for one `ray.wait` over 64, 512 and 4096 pending calls (collect waits once per returned call,
so this is the term that grows faster than linearly). Prints one JSON line.

    flock /tmp/cpu_bench.lock python bench/scale.py                  # 2, 8, 16, 32 workers
    flock /tmp/cpu_bench.lock python bench/scale.py --workers 2 8    # quicker
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch
from ray.cluster_utils import Cluster
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.configure import compose_config  # noqa: E402
from actors.rollout_group import RolloutGroup, records_for  # noqa: E402
from actors.weight_sync.buckets import Layout, Sealed, WeightsHandle  # noqa: E402
from actors.weight_sync.planner import OBJECT_STORE, SHARED_MEMORY, Placement  # noqa: E402
from actors.weight_sync.publisher import WeightPublisher  # noqa: E402
from actors.weight_sync.registry import Receivers, Senders, local_placement  # noqa: E402
from actors.weights_source import Checkpoint  # noqa: E402
from rewards.contract import ResponseScore  # noqa: E402
from rewards.result import Score  # noqa: E402
from rollout.trajectory import Trajectory  # noqa: E402
from rollout.trajectory_batch import TrajectoryBatch  # noqa: E402

GPUS_PER_NODE = 8
CPU = torch.device("cpu")
RESPONSE = 64  # tokens per stand-in response


class StandInRollout:
    """A rollout worker without a model: each row costs `row_s` seconds of sleep."""

    def __init__(self, row_s: float) -> None:
        torch.set_num_threads(1)  # as a rollout worker's default
        self.row_s, self.version = row_s, 0
        self.model, self.receivers = torch.nn.Module(), Receivers(CPU)
        self.loaded, self.load_s = "", 0.0  # the last Sealed handle loaded; seconds its load took

    def ping(self) -> bool:
        return True

    def placement(self) -> Placement:
        return local_placement(CPU)

    @ray.method(num_returns=2)
    def generate(self, shard: list, params: object, weights: Sealed | None = None) -> tuple[list, TrajectoryBatch]:
        if weights is not None and weights.digest != self.loaded:  # as a rollout worker: bind, then decode
            self.load_weights(weights)
        with self.receivers.reading(self.model, self.version):
            time.sleep(self.row_s * len(shard))
        trajs = []
        for r in shard:
            t = Trajectory(prompt_ids=list(r.prompt_ids), response_ids=[5] * RESPONSE,
                           step_map=list(range(1, RESPONSE + 1)), logprobs=[0.0] * RESPONSE,
                           entropies=[0.0] * RESPONSE, block_size=4,
                           finish_reason="length", num_forwards=RESPONSE)
            t.policy_version, t.prompt_uid, t.sample_idx = self.version, r.uid, r.sample_idx
            trajs.append(t)
        batch = TrajectoryBatch.from_trajectories(trajs)
        return batch.metas(), batch

    def load_weights(self, handle: WeightsHandle | Sealed) -> int:
        start = time.perf_counter()
        self.loaded = handle.digest if isinstance(handle, Sealed) else ""
        handle = handle.open() if isinstance(handle, Sealed) else handle
        if len(self.model.state_dict()) != len(handle.index):  # a stand-in model of that layout
            self.model = torch.nn.Module()
            for m in handle.index:
                self.model.register_parameter(m.name, torch.nn.Parameter(torch.zeros(m.shape, dtype=m.dtype),
                                                                         requires_grad=False))
        self.receivers.load(handle, self.model)  # as a rollout worker does (same node: views of the slot)
        self.version = handle.version
        self.load_s = time.perf_counter() - start
        return self.version

    def loaded_version(self) -> tuple[int, float]:
        return self.version, self.load_s


class StandInLearner:
    """Learner rank 0 without an engine: its weights are `tensors` fp32 tensors of `mb` MB in all."""

    def __init__(self, mb: int, tensors: int, tag: str) -> None:
        n = max((mb << 20) // 4 // tensors, 1)
        self.state = {f"w{i}": torch.randn(n) for i in range(tensors)}
        self.layout: Layout = [(name, t.dtype, tuple(t.shape)) for name, t in self.state.items()]
        self.senders = Senders(tag, 64 << 20, CPU)

    def placement(self) -> Placement:
        return local_placement(CPU, self.senders.shm_problem(self.layout))

    def publish_weights(self, version: int, kinds: list[str]) -> dict[str, WeightsHandle]:
        return self.senders.publish(iter(self.state.items()), self.layout, kinds, version)

    def close(self) -> None:
        self.senders.close()


class StandInReward:
    def score(self, batch: TrajectoryBatch, which: list[int], task_rows: list, parts: object) -> list:
        return [ResponseScore(*batch.key(i), Score(*batch.key(i), reward=float(i % 2), correct=bool(i % 2)))
                for i in which]


class Idle:
    def hold(self) -> None:
        time.sleep(120)


def wait_cost(pending: list[int], repeats: int = 50) -> dict[int, float]:
    """Driver CPU ms of one `ray.wait(..., num_returns=1)` over this many pending calls (what
    `RolloutGroup.collect` does once per returned call)."""
    actor = ray.remote(Idle).options(num_cpus=0, resources={"head": 1}).remote()
    out = {}
    for n in pending:
        refs = [actor.hold.remote() for _ in range(n)]
        cpu = time.process_time()
        for _ in range(repeats):
            ray.wait(refs, num_returns=1, timeout=0)
        out[n] = round((time.process_time() - cpu) / repeats * 1e3, 3)
    ray.kill(actor)
    return out


def slope(xs: list[float], ys: list[float]) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def workers_in(pg, n: int, row_s: float, extra: dict) -> list:
    Worker = ray.remote(StandInRollout)
    return [Worker.options(num_cpus=0.01, scheduling_strategy=PlacementGroupSchedulingStrategy(pg, i), **extra)
            .remote(row_s) for i in range(n)]


def sync_s(workers: list, mb: int, tensors: int, transport: str, repeats: int) -> tuple[float, float]:
    """Median seconds of `WeightPublisher.publish` (rank 0 packs a version; a pushed transport's
    workers load it, shared-memory ones bind it in their next generate), and the median of the
    workers' own load or bind seconds. Every worker then holds the version (checked)."""
    learner = ray.remote(StandInLearner).options(num_cpus=0.01, resources={"head": 1}).remote(
        mb, tensors, f"scale-{mb}-{len(workers)}")
    publisher = WeightPublisher([learner], workers, transport)
    times, loads = [], []
    for v in range(1, repeats + 2):
        times.append(publisher.publish(v))
        ray.get([w.generate.remote([], None, publisher.binding(i))[0] for i, w in enumerate(workers)])
        held = ray.get([w.loaded_version.remote() for w in workers])
        assert {h for h, _ in held} == {v}, held
        loads.append(statistics.median(s for _, s in held))
    ray.get(learner.close.remote())
    ray.kill(learner)
    return statistics.median(times[1:]), statistics.median(loads[1:])  # the first pays for fresh mappings


def measure(n: int, args: argparse.Namespace) -> dict[str, float]:
    row_s = args.row_ms / 1000
    # Placement: one bundle per worker over the simulated nodes, and every worker up.
    start = time.perf_counter()
    pg = placement_group([{"CPU": 0.01, "GPU": 1}] * n, strategy="SPREAD")
    ray.get(pg.ready())
    workers = workers_in(pg, n, row_s, {"num_gpus": 1})
    ray.get([w.ping.remote() for w in workers])
    placement = time.perf_counter() - start
    cfg = compose_config(["trainer.reward_chunk=64", "rollout.max_batch_rows=256"])
    rewarders = [ray.remote(StandInReward).options(num_cpus=0.01, resources={"head": 1}).remote() for _ in range(2)]
    group = RolloutGroup(cfg, workers, rewarders, [], Checkpoint(), encode=list)
    rows = args.rows * n
    uids = [f"p{i}" for i in range(rows // 4)]
    records = records_for(uids, [[7] * 32 for _ in uids], 4)
    task_rows = {u: {} for u in uids}
    walls, cpus = [], []
    for _ in range(args.steps + 1):
        cpu, wall = time.process_time(), time.perf_counter()
        got, scores, _ = group.collect(group.submit(records, task_rows, cfg.rollout, group.route))
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        assert len(got) == len(scores) == rows
    shards = max(n, math.ceil(rows / (2 * cfg.rollout.max_batch_rows)))
    work = row_s * math.ceil(shards / n) * rows / shards  # the busiest worker's sleep
    spread, _ = sync_s(workers, args.weights_mb, args.tensors, OBJECT_STORE, args.repeats)
    for a in workers + rewarders:
        ray.kill(a)
    remove_placement_group(pg)
    # The same fan-out with every worker on the head node, beside the weights.
    pg = placement_group([{"CPU": 0.01, "head": 1}] * n, strategy="PACK")
    ray.get(pg.ready())
    workers = workers_in(pg, n, row_s, {"resources": {"head": 1}})
    ray.get([w.ping.remote() for w in workers])
    same, bind = sync_s(workers, args.weights_mb, args.tensors, SHARED_MEMORY, args.repeats)
    calls, _ = sync_s(workers, 0, 1, SHARED_MEMORY, args.repeats)  # one 4-byte tensor: no weights to speak of
    for a in workers:
        ray.kill(a)
    remove_placement_group(pg)
    step, cpu = statistics.median(walls[1:]), statistics.median(cpus[1:])
    return {"workers": n, "rows": rows, "step_s": round(step, 4), "work_s": round(work, 4),
            "overhead_s": round(step - work, 4), "driver_cpu_s": round(cpu, 4),
            "driver_cpu_share": round(cpu / step, 4), "sync_same_node_s": round(same, 4),
            "bind_ms": round(bind * 1e3, 3), "sync_fan_out_s": round(calls, 4),
            "sync_spread_s": round(spread, 4), "placement_s": round(placement, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 8, 16, 32])
    ap.add_argument("--rows", type=int, default=64, help="rows per worker per step")
    ap.add_argument("--row-ms", type=float, default=10.0, help="a stand-in worker's seconds per row, in ms")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--weights-mb", type=int, default=16)
    ap.add_argument("--tensors", type=int, default=288, help="tensors in a version (a 7B model: 288)")
    args = ap.parse_args()
    nodes = max(1, math.ceil(max(args.workers) / GPUS_PER_NODE))
    temp = tempfile.mkdtemp(prefix="ray-scale-")
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "resources": {"head": 1000}, "temp_dir": temp, "object_store_memory": 1 << 30})
    for _ in range(nodes):
        cluster.add_node(num_cpus=2, num_gpus=GPUS_PER_NODE, object_store_memory=1 << 30)
    ray.init(address=cluster.address, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}})
    try:
        rows = [measure(n, args) for n in args.workers]
        waits = wait_cost([64, 512, 4096])
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    ns = [r["workers"] for r in rows]
    exponents = {k: round(slope(ns, [max(r[k], 1e-6) for r in rows]), 3)
                 for k in ("driver_cpu_s", "overhead_s", "sync_same_node_s", "sync_fan_out_s", "sync_spread_s",
                           "placement_s")}
    first, last = rows[0], rows[-1]
    print(json.dumps({"nodes": nodes + 1, "gpus_per_node": GPUS_PER_NODE, "rows_per_worker": args.rows,
                      "row_ms": args.row_ms, "weights_mb": args.weights_mb, "tensors": args.tensors, "by_workers": rows,
                      "exponents": exponents,
                      "sync_same_node_ratio": round(last["sync_same_node_s"] / first["sync_same_node_s"], 2),
                      "driver_cpu_share_at_max": last["driver_cpu_share"], "wait_ms_by_pending": waits}))


if __name__ == "__main__":
    main()
