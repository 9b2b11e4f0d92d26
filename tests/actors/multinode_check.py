"""Run in its own process by test_multinode.py: a 3-node ray.cluster_utils.Cluster where the two
learner ranks land on two nodes and the rollout workers on the third, so weights travel over the
collective (gloo) transport. Prints one JSON line with what it saw."""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import ray
import torch
from ray.cluster_utils import Cluster

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "actors")]

from actors.pools import create_pools  # noqa: E402
from actors.run import model_path  # noqa: E402
from actors.stages import collect, submit  # noqa: E402
from actors.step_data import records_for  # noqa: E402
from actors.sync import sync_weights  # noqa: E402
from support import RUNTIME_ENV, SMALL, compose_config  # noqa: E402


def main(run_dir: str) -> None:
    temp = tempfile.mkdtemp(prefix="ray-mn-")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "temp_dir": temp})
    for _ in range(2):
        cluster.add_node(num_cpus=2, resources={"learner_node": 2})
    cluster.add_node(num_cpus=4, resources={"rollout_node": 4})
    ray.init(address=cluster.address, runtime_env=RUNTIME_ENV)
    try:
        cfg = compose_config(SMALL + [
            f"trainer.run_dir={run_dir}", "cluster.learner.num_workers=2", "cluster.learner.strategy=STRICT_SPREAD",
            "+cluster.learner.resources={learner_node: 1}", "+cluster.rollout.resources={rollout_node: 1}",
            "engine.lr=1e-2"])
        pools = create_pools(cfg, model_path(cfg, Path(run_dir)), "tests.actors.digit_reward:reward", "test-mn")
        learner_nodes = ray.get([a.node_id.remote() for a in pools.learner])
        rollout_nodes = ray.get([w.node_id.remote() for w in pools.rollout])
        records = records_for(["a", "b"], [[23, 18, 24, 30], [25, 24, 18, 27, 30]], 2)
        rows = {"a": {}, "b": {}}
        trajs, _ = collect(pools, submit(pools, records, rows, cfg.rollout), 0, chunk=4)
        shards = [(trajs[i::2], [1.0, -1.0] * 2) for i in range(2)]
        ray.get([a.rl_step.remote(tr, ad[:len(tr)], None, 0) for a, (tr, ad) in zip(pools.learner, shards)])
        seconds = sync_weights(pools, 1)
        learner = ray.get([a.state_dict.remote() for a in pools.learner])[0]
        equal = all(all(torch.equal(v, learner[k]) for k, v in ray.get(w.state_dict.remote()).items())
                    for w in pools.rollout)
        print(json.dumps({"learner_nodes": len(set(learner_nodes)), "rollout_nodes": rollout_nodes,
                          "learner_node_ids": learner_nodes, "transport": pools.transport, "equal": equal,
                          "versions": ray.get([w.version.remote() for w in pools.rollout]), "sync_s": seconds}))
        pools.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1])
