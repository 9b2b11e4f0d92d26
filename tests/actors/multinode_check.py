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
from ray.cluster_utils import Cluster

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "actors")]

from actors.rollout_group import records_for  # noqa: E402
from actors.start import start_run  # noqa: E402
from support import RUNTIME_ENV, SMALL, compose_config  # noqa: E402
from tests.actors.weights import learner_weights, rollout_weights, same, weights_version  # noqa: E402


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
            "engine.lr=1e-2", "trainer.logger=[]", "task.reward=tests.actors.digit_reward:reward",
            "ray.namespace=test-mn"])
        run = start_run(cfg)
        ranks, rollout = run.learner.ranks, run.rollout
        learner_nodes = ray.get([a.node_id.remote() for a in ranks])
        rollout_nodes = ray.get([w.node_id.remote() for w in rollout.workers])
        records = records_for(["a", "b"], [[23, 18, 24, 30], [25, 24, 18, 27, 30]], 2)
        rows = {"a": {}, "b": {}}
        trajs, _, _ = rollout.collect(rollout.submit(records, rows, cfg.rollout, rollout.route))
        shards = [(trajs[i::2], [1.0, -1.0] * 2) for i in range(2)]
        ray.get([a.rl_step.remote(tr, ad[:len(tr)], None, 0) for a, (tr, ad) in zip(ranks, shards)])
        seconds = run.learner.publisher.publish(1)
        learner = learner_weights(ranks)
        equal = all(same(rollout_weights(w), learner) for w in rollout.workers)
        print(json.dumps({"learner_nodes": len(set(learner_nodes)), "rollout_nodes": rollout_nodes,
                          "learner_node_ids": learner_nodes, "transport": run.learner.publisher.transports,
                          "equal": equal, "versions": [weights_version(w) for w in rollout.workers],
                          "sync_s": seconds}))
        run.close()
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1])
