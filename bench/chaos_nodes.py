"""Node-level chaos (`python bench/chaos.py --nodes`): whole nodes lost, preempted with a warning
and added during a tiny run on a `ray.cluster_utils.Cluster`, against the same run without them on
the same cluster, with bench/chaos.py's accounting (prompts lost or double-counted, every per-step
metric equal to the fault-free run's).

Nodes: the head (the driver), two rollout nodes (one rollout worker each, STRICT_SPREAD; the first
also runs the reward worker, so the batches decoded there have no copy elsewhere), two learner
nodes (the rank on one, the other spare). Faults, at the run's hook points (actors/hooks.py):

- `kill`: after the step's collect, the first rollout node is removed (and a node with a reward
  bundle added, or the reward pool would wait at its minimum) → its batches are decoded again
  before the update; the rollout pool works on with one worker (cluster.rollout.min_workers=1);
- `kill_update`: the same node removed as the step's update is handed out → the learner cannot
  read those batches: the group is recreated from the last checkpoint and the steps since replayed;
- `kill_reward`: the same node removed as soon as a shard decoded there is back, before the scorers
  read its batch (its reward worker dies with it) → the scorer that takes the chunks over cannot read the
  batch: the shard is decoded again on the other node and scored from the new copy;
- `kill_sync`: the same node removed as the learner publishes the step's new weights → its worker
  leaves the pool mid-sync, the others load the version;
- `add`: after the step's collect, a rollout node joins → the pool grows to its target at the
  next step (a slot whose bundle was lost, or one never placed: `short_start`), the new worker
  synced before its first shard;
- `preempt`: during the step's update the learner's node is drained with a deadline → a
  just-in-time checkpoint after the step; the node is removed when the next step starts → the
  group is recreated on the spare learner node from that checkpoint;
- `drain_all`: during the step's update every learner node is drained → checkpoint and stop
  (ClusterDrained). Ends the run: the test uses it, the bench does not.

`short_start`: the second rollout node is removed before the run with faults starts, so its rollout
pool starts with 1 of its 2 workers (cluster.rollout.min_workers=1; the second slot's placement
group waits for a node).
"""
from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.cluster_utils import Cluster
from ray.core.generated import autoscaler_pb2
from ray.util.placement_group import placement_group_table

from actors import driver
from actors.checkpoint import complete_checkpoints
from actors.cluster_watch import stored_on
from actors.configure import compose_config
from actors.loop import ClusterDrained
from actors.metrics import read_jsonl
from actors.start import namespace_for
from bench.chaos import DENSE_REWARD, Injector, comparable, differences
from bench.common import REPO

ROLLOUT = {"num_cpus": 1, "resources": {"rollout_node": 1}}
LEARNER = {"num_cpus": 1, "resources": {"learner_node": 1}}
REWARD = {"num_cpus": 1, "resources": {"reward_node": 1}}
KILLS = ("kill_update", "kill", "kill_reward", "kill_sync")  # the moment of a step the rollout node is lost
KINDS = (*KILLS, "add", "preempt", "drain_all")


def overrides(run_dir: Path, steps: int) -> list[str]:
    return [f"trainer.run_dir={run_dir}", f"trainer.steps={steps}", "trainer.checkpoint_every=3",
            "trainer.keep_last=5", "trainer.prompts_per_step=4", "trainer.responses_per_prompt=4",
            "rollout.max_new_tokens=8", "trainer.eval_every=0", "task.train_size=100", "trainer.progress=false",
            "trainer.plot=false", "trainer.logger=[]", "warmup.steps=0", "engine.schedule=constant",
            "engine.warmup_steps=0", "engine.lr=1e-2", "engine.backend=torch", f"task.reward={DENSE_REWARD}",
            "trainer.max_learner_restarts=2", "cluster.rollout.num_workers=2", "+cluster.rollout.min_workers=1",
            "cluster.rollout.strategy=STRICT_SPREAD", "+cluster.rollout.resources={rollout_node: 1}",
            "+cluster.learner.resources={learner_node: 1}", "+cluster.reward.resources={reward_node: 1}",
            "cluster.learner.cpus_per_worker=1"]  # a simulated learner node has one CPU


def node_schedule(steps: int, seed: int) -> dict[int, str]:
    """A node lost (at the moment `KILLS[seed % 4]`), a node added, a learner node preempted, at
    seeded increasing steps in 2..steps-1 (the node added comes after the one lost; the preemption
    after both, with a step left to replay it)."""
    kill, add, preempt = sorted(random.Random(seed).sample(range(2, steps), 3))
    return {kill: KILLS[seed % len(KILLS)], add: "add", preempt: "preempt"}


@dataclass
class NodeFaults(Injector):
    """bench/chaos.py's accounting, with node faults: `plan` maps a 1-based step to a fault kind."""
    cluster: Cluster | None = None
    nodes: dict[str, Any] = field(default_factory=dict)  # name -> the Cluster's node
    plan: dict[int, str] = field(default_factory=dict)
    run_dir: Path = Path()
    done: set[int] = field(default_factory=set)  # steps whose fault was injected (a replay does not repeat it)
    seen: dict[str, Any] = field(default_factory=lambda: {"versions_at_collect": {}})
    warned: str | None = None  # the drained learner node, removed when the next step starts
    rows: list = field(default_factory=list)  # the last rollout's rows
    injected: list[str] = field(default_factory=list)  # node faults injected, in order

    def _node_due(self, kind: str) -> bool:
        due = self.plan.get(self.step) == kind and self.step not in self.done
        if due:
            self.done.add(self.step)
        return due

    def _drain(self, node_id: str) -> None:
        gcs = ray._raylet.GcsClient(address=self.cluster.address)
        accepted, why = gcs.drain_node(node_id, autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"),
                                       "spot reclaim", int(time.time() * 1000) + 60_000)
        assert accepted, why

    def step_started(self, step: int) -> None:
        super().step_started(step)
        if self.warned is not None:  # the warned learner node goes now
            self.seen["checkpoints_before_removal"] = [s for s, _ in complete_checkpoints(self.run_dir)]
            self.cluster.remove_node(self.nodes.pop(self.warned))
            self.warned = None

    def rollout_collected(self, records, rows, scores, reissued) -> None:
        super().rollout_collected(records, rows, scores, reissued)
        self.seen["versions_at_collect"][self.step] = sorted({m.policy_version for m in rows})
        self.rows = rows
        if self._node_due("kill"):
            self._remove_first_rollout_node("kill")
        if self._node_due("add"):
            self.nodes[f"rollout-new-{self.step}"] = self.cluster.add_node(**ROLLOUT)
            deadline = time.monotonic() + 60
            while self._rollout_bundles_placed() < 2 and time.monotonic() < deadline:  # Ray places a bundle there
                time.sleep(0.2)
            self.injected.append("add")

    def _rollout_bundles_placed(self) -> int:
        """The run's rollout bundles Ray has placed on a live node, over the pool's placement groups
        (a bundle being placed again may still name its dead node)."""
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        return sum(node in alive for info in placement_group_table().values()
                   if info["name"].startswith(f"{self.namespace}-rollout") and info["state"] != "REMOVED"
                   for node in info["bundles_to_node_id"].values())

    def _remove_first_rollout_node(self, kind: str) -> None:
        """The node with the first rollout worker and the reward worker goes (the batches decoded
        there have no copy elsewhere); a node for the reward bundle joins."""
        victim = self.nodes.pop("rollout-a")
        stored = stored_on(list({m.payload for m in self.rows}))
        self.seen["only_copies_lost"] = sum(nodes == [victim.node_id] for nodes in stored.values())
        self.nodes["reward-new"] = self.cluster.add_node(**REWARD)
        self.cluster.remove_node(victim)
        self.injected.append(kind)

    def shard_returned(self, rows) -> None:
        """The node each shard was decoded on (its batch is there alone until a scorer reads it).
        `kill_reward`: the first shard of the step decoded on the first rollout node takes it down
        before the scorers read it."""
        decoded = self.seen.setdefault("decoded_on", {}).setdefault(self.step, [])
        decoded += [n for n in stored_on([rows[0].payload])[rows[0].payload] if n not in decoded]
        node = self.nodes.get("rollout-a")
        if (self.plan.get(self.step) == "kill_reward" and node is not None
                and stored_on([rows[0].payload])[rows[0].payload] == [node.node_id] and self._node_due("kill_reward")):
            self.rows = rows
            self._remove_first_rollout_node("kill_reward")

    def weights_publishing(self) -> None:
        if self._node_due("kill_sync"):
            self.rows = []
            self._remove_first_rollout_node("kill_sync")

    def update_starting(self) -> None:
        super().update_starting()
        if self._node_due("kill_update"):
            self._remove_first_rollout_node("kill_update")
        if self._node_due("preempt"):
            rank0 = ray.get_actor("learner-0", namespace=self.namespace)
            node = ray.get(rank0.node_id.remote())
            self.warned = next(name for name, n in self.nodes.items() if n.node_id == node)
            self._drain(node)
            self.injected.append("preempt")
        if self._node_due("drain_all"):
            for name, n in self.nodes.items():
                if name.startswith("learner"):
                    self._drain(n.node_id)
            self.injected.append("drain_all")


def run_node_chaos(work: Path, plan: dict[int, str], steps: int, short_start: bool = False) -> dict[str, Any]:
    """The fault-free run (steps up to the last fault-free one) and the run with `plan`'s node
    faults, on one simulated cluster; the accounting, what the run logged and what the faults saw.
    `short_start`: the run with faults starts with one rollout node of two."""
    temp = tempfile.mkdtemp(prefix="ray-nodes-")
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "temp_dir": temp,
        "_system_config": {"max_direct_call_object_size": 256}})  # batches go to their node's object store
    nodes = {"rollout-a": cluster.add_node(num_cpus=2, resources={"rollout_node": 1, "reward_node": 1}),
             "rollout-b": cluster.add_node(**ROLLOUT), "learner-a": cluster.add_node(**LEARNER),
             "learner-b": cluster.add_node(**LEARNER)}
    ray.init(address=cluster.address, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}})
    stop = min([s for s, kind in plan.items() if kind == "drain_all"], default=steps)
    try:
        start = time.perf_counter()
        driver.run_to_end(compose_config(overrides(work / "fault_free", stop)))
        clean_s = time.perf_counter() - start
        cfg = compose_config(overrides(work / "faults", steps))
        if short_start:
            cluster.remove_node(nodes.pop("rollout-b"))
        faults = NodeFaults([], namespace_for(cfg, work / "faults"), cluster=cluster, nodes=nodes, plan=plan,
                            run_dir=work / "faults")
        error = stopped = restarts = None
        start = time.perf_counter()
        try:
            restarts = driver.run_to_end(cfg, hooks=faults).learner.restarts
        except ClusterDrained as err:
            stopped = str(err)
        except Exception as err:  # reported, not raised: the figures say what was survived
            error = f"{type(err).__name__}: {err}"
        faults_s = time.perf_counter() - start
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    lines = read_jsonl(work / "faults" / "metrics.jsonl")
    logged = Counter(r["step"] for r in lines if "reward_mean" in r)
    per_step = cfg.trainer.prompts_per_step * cfg.trainer.responses_per_prompt
    missing = [s for s in range(1, stop + 1) if s not in logged]
    diff = differences(comparable(lines), comparable(read_jsonl(work / "fault_free" / "metrics.jsonl")))
    by_step = {r["step"]: r for r in lines if "reward_mean" in r}
    last = by_step[max(by_step)] if by_step else {}
    return {"faults_injected": len(faults.injected), "faults_survived": len(faults.injected) if error is None else 0,
            "prompts_lost": faults.lost + per_step * len(missing),
            "prompts_double_counted": faults.duplicated + per_step * sum(n - 1 for n in logged.values()),
            "metrics_equal_to_fault_free": error is None and not diff, "metrics_differing": diff[:8],
            "schedule": [f"{kind}@step{s}" for s, kind in sorted(plan.items())], "error": error, "stopped": stopped,
            "steps_logged": sorted(logged), "pool_size": {s: r.get("pool/rollout/size") for s, r in by_step.items()},
            "reward_pool": {s: r.get("pool/reward/size") for s, r in by_step.items()},
            "reissued": {s: r.get("reissued", 0.0) for s, r in by_step.items()},
            "pool_target": last.get("pool/rollout/target"), "pool_restarts": last.get("pool/restarts"),
            "regenerated": last.get("cluster/batches_regenerated"), "preemptions": last.get("cluster/preemptions"),
            "steps_lost": last.get("cluster/steps_lost"), "learner_restarts": restarts,
            "checkpoints": [s for s, _ in complete_checkpoints(work / "faults")],
            "fault_free_s": round(clean_s, 2), "faults_s": round(faults_s, 2), **faults.seen}
