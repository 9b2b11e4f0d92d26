"""Multi-node placement, the collective transport and node faults on ray.cluster_utils.Cluster
(run in a subprocess: it needs a Ray session of its own)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_three_node_cluster(tmp_path):
    out = subprocess.run([sys.executable, str(HERE / "multinode_check.py"), str(tmp_path)], capture_output=True,
                         text=True, timeout=400, cwd=HERE.parents[1])
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["learner_nodes"] == 2
    assert len(set(seen["rollout_nodes"])) == 1 and seen["rollout_nodes"][0] not in seen["learner_node_ids"]
    assert seen["transport"] == ["collective", "collective"]
    assert seen["equal"] and seen["versions"] == [1, 1]


def test_node_loss_drain_and_growth(tmp_path):
    """tests/actors/elastic_check.py: a start with one rollout node of two, rollout nodes added, a
    node with a step's only batch copies removed after collect, the learner's node drained then
    removed, every learner node drained."""
    out = subprocess.run([sys.executable, str(HERE / "elastic_check.py"), str(tmp_path)], capture_output=True,
                         text=True, timeout=400, cwd=HERE.parents[1])
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    # Every step equals the fault-free run's, up to the stop: no prompt lost or counted twice.
    assert seen["error"] is None and seen["metrics_equal_to_fault_free"], seen["metrics_differing"]
    assert seen["prompts_lost"] == seen["prompts_double_counted"] == 0 and seen["steps_logged"] == [1, 2, 3, 4, 5, 6]
    assert seen["only_copies_lost"] >= 1 and seen["regenerated"] >= 1  # the lost batches were decoded again
    # The pool started below its target (its second slot's placement group waiting for a node) and
    # grew when a node joined: step 2 decoded on two nodes. It shrank with the lost node and grew back
    # on the next new one; every new worker held the current weights before its first shard (no
    # shard came back stale and was re-issued).
    assert [len(seen["decoded_on"][str(s)]) for s in range(1, 7)] == [1, 2, 1, 2, 2, 2], seen
    assert [seen["pool_size"][str(s)] for s in range(1, 7)] == [1, 1, 1, 2, 2, 2] and seen["pool_target"] == 2
    assert seen["reward_pool"]["3"] == 1 and seen["pool_restarts"] == 2  # a rollout and a reward worker (lost)
    assert all(v == 0 for v in seen["reissued"].values())
    assert seen["versions_at_collect"] == {str(s): [s - 1] for s in range(1, 7)}
    # The drained learner node: a just-in-time checkpoint at step 4 (the periodic one is at 3) before
    # the node went; the group recreated from it replays no finished step.
    assert seen["checkpoints_before_removal"] == [3, 4] and seen["steps_lost"] == 0 and seen["preemptions"] == 2
    # Every learner node draining: a checkpoint of step 6, then a stop that says how to go on.
    assert seen["checkpoints"][-1] == 6 and "trainer.resume=auto" in seen["stopped"]
