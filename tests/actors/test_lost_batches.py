"""A batch lost before its scorer read it (its node gone: bench/chaos.py --nodes kill_reward does it
on a multi-node cluster) is decoded again and scored from the new copy; one lost after collect in
an async run is decoded with the weights the workers hold now; a rollout worker lost during weight
sync leaves the pool. Stand-in workers from bench/scale.py, the project's own
RolloutGroup and WeightPublisher; a gloo group in threads for the broken broadcast."""
from __future__ import annotations

import gc
import threading
import time
from dataclasses import replace

import pytest
import ray
import torch

from actors.cluster_watch import ClusterWatch
from actors.configure import compose_config
from actors.rollout_group import RolloutGroup, records_for
from actors.weight_sync.collective import BroadcastGroup, GroupSender
from actors.weight_sync.planner import COLLECTIVE, OBJECT_STORE
from actors.weight_sync.publisher import WeightPublisher
from actors.weight_sync.registry import Senders
from actors.weights_source import Checkpoint
from bench.scale import StandInLearner, StandInReward, StandInRollout
from learner.distributed import free_port
from tests.actors.lost_read import LosesFirstRead
from tests.actors.weights import hold


@pytest.fixture(scope="module")
def workers(ray_session):
    """Three stand-in rollout workers (each a process importing torch: shared by both tests)."""
    actors = [ray.remote(StandInRollout).options(num_cpus=0.1).remote(0.0) for _ in range(3)]
    yield actors
    for a in actors:
        ray.kill(a)


def test_a_batch_lost_before_its_scorer_read_it_is_decoded_again_and_scored(workers):
    cfg = compose_config(["trainer.reward_chunk=4", "rollout.max_batch_rows=4"])
    scorer = ray.remote(LosesFirstRead).options(num_cpus=0.1).remote()
    group = RolloutGroup(cfg, workers[:2], [scorer], [], Checkpoint(), encode=list)
    uids = [f"p{i}" for i in range(4)]
    records = records_for(uids, [[7, i] for i in range(4)], 4)
    task_rows = {u: {} for u in uids}
    try:
        job = group.submit(records, task_rows, cfg.rollout, group.route)
        rows, scores, _ = group.collect(job)
        again, clean_scores, _ = group.collect(group.submit(records, task_rows, cfg.rollout, group.route))
    finally:
        ray.kill(scorer)
    [(lost, fresh)] = job.redone.items()
    assert job.reissued["reward"] == 1 and group.watch.regenerated == 1
    redone = [m for m in rows if m.payload == fresh]
    assert redone and not any(m.payload == lost for m in rows)  # the rows point at the new copy
    # Every row once, scored once, as the run without the loss.
    assert [m.key for m in rows] == [m.key for m in again] == [(r.uid, r.sample_idx) for r in records]
    assert scores == clean_scores
    assert [replace(m, payload=None) for m in rows] == [replace(m, payload=None) for m in again]


class LosesFirstBatch(ClusterWatch):
    """A watch that finds the first batch of the rollout stranded, as if its node had died."""

    def stranded(self, stored: dict) -> set:
        return {next(iter(stored))}


def test_an_async_batch_lost_after_collect_is_decoded_with_the_weights_held_now(workers):
    """async.max_staleness=1: the lost rows were sampled with the version before the one the workers
    hold, which no worker can decode again; they are decoded with the current one, nothing lost."""
    cfg = compose_config(["trainer.reward_chunk=4", "rollout.max_batch_rows=4"])
    weights, scorer = Checkpoint(), ray.remote(StandInReward).options(num_cpus=0.1).remote()
    group = RolloutGroup(cfg, workers[:2], [scorer], [], weights, encode=list, watch=LosesFirstBatch())
    uids = [f"p{i}" for i in range(4)]
    records = records_for(uids, [[7, i] for i in range(4)], 4)
    try:
        job = group.submit(records, {u: {} for u in uids}, cfg.rollout, group.route)
        rows, _, _ = group.collect(job)
    finally:
        ray.kill(scorer)
    group.collected = job  # the step's rollout (RolloutGroup.step_batch)
    hold(workers[:2], 1)  # the workers took the next version while this rollout waited for its update
    weights.held = 1
    again = group.regenerate_lost(rows)
    lost = rows[0].payload  # the first batch LosesFirstBatch is shown
    assert group.watch.regenerated == 1 and not any(m.payload == lost for m in again)
    assert [m.key for m in again] == [m.key for m in rows] == [(r.uid, r.sample_idx) for r in records]
    assert {m.policy_version for m in again if m.key in {r.key for r in rows if r.payload == lost}} == {1}
    hold(workers[:2], 0)  # lockstep: the same weights decode the same rows again, and that is checked
    weights.held = 0
    assert [replace(m, payload=None) for m in group.regenerate_lost(rows)] == [replace(m, payload=None) for m in rows]


def test_a_worker_lost_during_weight_sync_leaves_the_pool(workers):
    learner = ray.remote(StandInLearner).options(num_cpus=0.1).remote(1, 4, "lost-sync")
    left: list[int] = []

    def gone(i: int) -> bool:  # what RolloutGroup.left_pool answers for a worker whose node went
        left.append(i)
        publisher.retire(i)
        return True

    publisher = WeightPublisher([learner], workers, OBJECT_STORE, left=gone)
    try:
        publisher.publish(1)
        ray.kill(workers[1], no_restart=True)  # as its node going: Ray does not start it again
        start = time.perf_counter()
        publisher.publish(2)
        seconds = time.perf_counter() - start
        versions = ray.get([workers[i].load_weights.remote(publisher.handles[OBJECT_STORE]) for i in (0, 2)])
    finally:
        ray.get(learner.close.remote())
        ray.kill(learner)
    assert left == [1] and publisher.retired == {1} and publisher.active == [0, 2]
    assert publisher.held == 2 and versions == [2, 2] and seconds < 30  # not a wait for a restart


def test_a_broadcast_broken_by_a_lost_member_fails_the_waiting_members_at_once():
    """Rank 0's broadcast fails on a member whose process is gone; a member that starts waiting
    after that would wait out the group's timeout, unless rank 0 drops the group (Senders.send)."""
    port, groups = free_port(), {}

    def join(rank: int) -> None:
        groups[rank] = BroadcastGroup("127.0.0.1", port, rank, 3, torch.device("cpu"), timeout_s=60)

    threads = [threading.Thread(target=join, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    senders = Senders("broken", 1 << 20, torch.device("cpu"))
    senders.senders[COLLECTIVE] = GroupSender(COLLECTIVE, groups.pop(0), 1 << 20)
    senders.senders[COLLECTIVE].buckets = [torch.ones(1 << 16)]
    del groups[2]  # member 2 gone: its connections close
    gc.collect()
    waited: dict[str, object] = {}

    def member() -> None:
        time.sleep(0.5)  # starts receiving after rank 0 failed
        start = time.perf_counter()
        try:
            groups[1].broadcast([torch.zeros(1 << 16)])[0].wait()
            waited["outcome"] = "received"
        except RuntimeError:
            waited["outcome"] = "failed"
        waited["s"] = time.perf_counter() - start

    t = threading.Thread(target=member)
    t.start()
    with pytest.raises(RuntimeError, match="weight broadcast failed"):
        senders.send([COLLECTIVE])
    t.join(timeout=90)
    assert COLLECTIVE not in senders.senders  # formed again (senders.join) before the next sync
    assert waited["outcome"] == "failed" and waited["s"] < 5  # not the group's 60 s
