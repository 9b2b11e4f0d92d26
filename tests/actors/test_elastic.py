"""The driver's view of a changing cluster, without Ray but for the last test: a pool that can never be placed is named
with what the cluster has; which trajectory batches count as lost when nodes drain or die; where a
learner rank could still go; which workers leave the pools."""
from __future__ import annotations

import time

import pytest

from actors.cluster_watch import ClusterWatch
from actors.config import PoolSection
from actors.placement import bundle, unplaceable
from actors.pool import Pool, Pools
from actors.start import start_run
from support import SMALL, compose_config

GPU_NODE = {"CPU": 16.0, "GPU": 8.0}
CPU_NODE = {"CPU": 4.0}


@pytest.mark.parametrize("pool,nodes,problem", [
    (PoolSection(num_workers=2, gpus_per_worker=1), [CPU_NODE, CPU_NODE], "no node has the resources of one worker"),
    (PoolSection(num_workers=9, gpus_per_worker=1, strategy="STRICT_PACK"), [GPU_NODE, GPU_NODE],
     "no node has room for all 9 workers"),
    (PoolSection(num_workers=3, strategy="STRICT_SPREAD"), [CPU_NODE, CPU_NODE], "only 2 node(s) can hold a worker"),
    (PoolSection(num_workers=17, gpus_per_worker=1), [GPU_NODE, GPU_NODE, CPU_NODE], "room for 16 workers"),
    (PoolSection(num_workers=2, resources={"rollout_node": 1}), [CPU_NODE], "no node has the resources"),
    (PoolSection(num_workers=20, min_workers=17, gpus_per_worker=1), [GPU_NODE, GPU_NODE], "room for 16 workers"),
])
def test_a_pool_that_can_never_be_placed_is_named_with_what_the_cluster_has(pool, nodes, problem):
    why = unplaceable("cluster.rollout", pool, bundle(pool), nodes)
    assert why is not None and why.startswith("cluster.rollout: ") and problem in why
    key = "cluster.rollout.min_workers" if pool.min_workers else "cluster.rollout.num_workers"
    assert f"Lower {key}" in why and str(nodes[0]) in why  # the key to change, what there is


@pytest.mark.parametrize("pool,nodes", [
    (PoolSection(num_workers=16, gpus_per_worker=1), [GPU_NODE, GPU_NODE]),
    (PoolSection(num_workers=8, gpus_per_worker=1, cpus_per_worker=2, strategy="STRICT_PACK"), [GPU_NODE]),
    (PoolSection(num_workers=3, strategy="STRICT_SPREAD"), [CPU_NODE, CPU_NODE, GPU_NODE]),
    # Its first 2 fit now; the other 18 start as nodes join.
    (PoolSection(num_workers=20, min_workers=2, gpus_per_worker=1), [GPU_NODE, CPU_NODE]),
    (PoolSection(num_workers=3, min_workers=2, strategy="STRICT_SPREAD"), [CPU_NODE, CPU_NODE]),
])
def test_a_pool_that_fits_is_placeable(pool, nodes):
    assert unplaceable("cluster.rollout", pool, bundle(pool), nodes) is None


def test_batches_on_a_draining_or_dead_node_are_stranded():
    watch = ClusterWatch(alive={"a", "b", "c"}, draining={"b": 0.0},
                         totals={"a": CPU_NODE, "b": GPU_NODE, "c": CPU_NODE})
    stored = {"only_a": ["a"], "only_b": ["b"], "only_gone": ["d"], "b_and_c": ["b", "c"], "inline": []}
    assert watch.stranded(stored) == {"only_b", "only_gone"}
    # A learner bundle needing a GPU fits only the draining node: nowhere to go.
    assert not watch.fits_anywhere({"CPU": 1.0, "GPU": 1.0}) and watch.fits_anywhere({"CPU": 1.0})
    assert watch.metrics()["cluster/draining_nodes"] == 1.0


class Roster:
    def __init__(self) -> None:
        self.retired: list[int] = []

    def retire(self, worker: int) -> None:
        self.retired.append(worker)

    def add(self, worker: int) -> None:
        raise AssertionError("no slot comes back without a placement group")


def test_workers_on_draining_or_dead_nodes_leave_the_pools_and_the_round_robin_skips_them():
    watch = ClusterWatch(alive={"a", "b"}, draining={"b": 0.0})
    roster = Roster()
    rollout = Pool("rollout", ["w0", "w1", "w2"], minimum=2, nodes=["a", "b", "c"])  # c: gone
    reward = Pool("reward", ["r0", "r1"], minimum=1, nodes=["a", "b"])
    pools = Pools({"rollout": rollout, "reward": reward, "judge": Pool("judge", [])}, watch, roster)
    pools.retire_unusable(watch)
    assert rollout.active == [0] and reward.active == [0] and roster.retired == [1, 2]  # only rollout's weights
    assert [reward.next_active(t) for t in range(3)] == [0, 0, 0]
    assert pools.short() == ["rollout 1/3 (cluster.rollout.min_workers=2)"]
    assert pools.metrics() == {"pool/rollout/size": 1.0, "pool/rollout/target": 3.0, "pool/reward/size": 1.0,
                               "pool/reward/target": 2.0, "pool/judge/size": 0.0, "pool/judge/target": 0.0,
                               "pool/restarts": 0.0}
    # A pool built from given actors (no nodes known) never retires anyone.
    untracked = Pool("rollout", ["w0"])
    assert untracked.retire_unusable(watch) == [] and untracked.active == [0]


def test_a_run_whose_pool_can_never_be_placed_stops_before_any_worker_starts(ray_session, tmp_path):
    cfg = compose_config(SMALL + [f"trainer.run_dir={tmp_path}", "trainer.logger=[]", "cluster.rollout.num_workers=2",
                                  "cluster.rollout.gpus_per_worker=1"])
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"^cluster.rollout: 2 worker\(s\) of .*'GPU': 1.*no node has the resources"):
        start_run(cfg)
    assert time.monotonic() - start < 60  # at once, not after the placement timeout
    assert not [a for a in ray_session.util.list_named_actors(all_namespaces=True) if a["name"].startswith("rollout")]
    assert ray_session.util.placement_group_table() == {} or all(
        pg["state"] == "REMOVED" for pg in ray_session.util.placement_group_table().values())  # none left reserved
