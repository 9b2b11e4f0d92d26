"""Faults: a rollout worker killed mid-step and a reward worker dying mid-chunk are restarted,
their work re-issued (the rollout worker only after it got the current weights; on shared memory
a restarted idle worker binds them in its next generate), and every
(prompt, sample) is accounted exactly once, and the batches a rollout worker returned outlive it
(the driver owns them); bench/chaos.py --quick (a worker of every pool and a
learner rank killed during one run) loses and double-counts nothing and ends as the fault-free run."""
from __future__ import annotations

import time

import ray
from ray.exceptions import RayActorError

from actors.payloads import fetch
from actors.rollout_group import records_for
from actors.start import start_run
from actors.timer import StepTimer
from actors.weight_sync.planner import OBJECT_STORE
from actors.weight_sync.publisher import WeightPublisher
from bench.chaos import run_chaos
from support import SMALL, compose_config
from tests.actors.weights import weights_version


def test_killed_workers_are_restarted_and_work_reissued(ray_session, tmp_path):
    cfg = compose_config(SMALL + [f"trainer.run_dir={tmp_path}", "cluster.reward.num_workers=2", "trainer.logger=[]",
                                  "task.reward=tests.actors.crash_reward:reward"])
    run = start_run(cfg)
    rollout = run.rollout
    try:
        run.learner.version = 1  # the weights the workers get are published as version 1
        run.learner.publish(StepTimer())
        uids = [f"p{i}" for i in range(6)]
        records = records_for(uids, [[23 + i, 18, 24, 30] for i in range(6)], 3)
        rows = {u: {"crash_marker": str(tmp_path / "crashed")} for u in uids}
        job = rollout.submit(records, rows, cfg.rollout, rollout.route)
        ray.kill(rollout.workers[0], no_restart=False)  # its shard is in flight
        trajs, scores, _ = rollout.collect(job)
        assert job.reissued["rollout"] == 1 and job.reissued["reward"] >= 1
        assert sorted((t.prompt_uid, t.sample_idx) for t in trajs) == sorted((r.uid, r.sample_idx) for r in records)
        assert len(scores) == len(records)
        assert {t.policy_version for t in trajs} == {1}  # the restarted worker got the current weights
        assert weights_version(rollout.workers[0]) == 1
        # The restarted pools keep working for the next step.
        done, _, _ = rollout.collect(rollout.submit(records, rows, cfg.rollout, rollout.route))
        assert len(done) == len(records) and len({m.payload for m in done}) == 2  # a batch from each worker
        # A worker restarted while idle holds its initial weights. On shared memory its next generate
        # binds the current version itself; a pushed transport's shard is re-synced and re-issued.
        _restart_idle(rollout.workers[1])
        # The batch the dead worker returned is the driver's (a return value): still there to read.
        fetched = fetch(done)
        assert [(t.prompt_uid, t.sample_idx, len(t.response_ids)) for t in fetched] == [
            (m.prompt_uid, m.sample_idx, m.response_len) for m in done]
        job = rollout.submit(records, rows, cfg.rollout, rollout.route)
        trajs, _, _ = rollout.collect(job)
        assert job.reissued["rollout"] == 0 and {t.policy_version for t in trajs} == {1}
        run.learner.publisher = WeightPublisher(run.learner.ranks, rollout.workers, forced=OBJECT_STORE)
        run.learner.version = 2
        run.learner.publish(StepTimer())
        _restart_idle(rollout.workers[1])
        job = rollout.submit(records, rows, cfg.rollout, rollout.route)
        trajs, _, _ = rollout.collect(job)
        assert job.reissued["rollout"] == 1 and {t.policy_version for t in trajs} == {2}
    finally:
        run.close()


def _restart_idle(worker) -> None:
    ray.kill(worker, no_restart=False)
    deadline = time.monotonic() + 120
    while _version(worker) != 0:  # the kill lands asynchronously; then Ray restarts it
        assert time.monotonic() < deadline
        time.sleep(0.2)


def _version(actor) -> int | None:
    try:
        return weights_version(actor)
    except RayActorError:  # dead or restarting (ActorUnavailableError included)
        return None


def test_chaos_quick_loses_nothing_and_matches_the_fault_free_run(ray_session, tmp_path):
    out = run_chaos(tmp_path, quick=True, seed=0)
    assert out["error"] is None
    assert out["faults_injected"] == out["faults_survived"] == len(out["schedule"]) >= 3  # rollout, reward, learner
    assert out["learner_restarts"] == 1
    assert out["prompts_lost"] == 0 and out["prompts_double_counted"] == 0
    assert out["metrics_equal_to_fault_free"], out["metrics_differing"]
