"""Issue 15: a reward that cannot reach a verdict is an explicit failure, counted per step, never
trained on, and past reward.max_failed_fraction it stops the run. The math checker works inside
Ray actors of every kind (sync, threaded, async)."""
from __future__ import annotations

import sys

import pytest
import ray

from actors import driver
from actors.reward_route import RewardFailureError, check_reward_failures
from actors.reward_worker import RewardWorker
from actors.step_batch import to_groups
from actors.step_metrics import rollout_metrics
from models.tiny import write_tiny_checkpoint
from rewards.contract import ScoreParts
from rewards.limits import RewardLimits
from rollout.trajectory import Trajectory
from rollout.trajectory_batch import TrajectoryBatch
from support import SMALL, compose_config

CASES = [("\\frac{3}{4}", "0.75", True), ("2\\sqrt{2}", "\\sqrt{8}", True), ("x^2+2x+1", "(x+1)^2", True),
         ("\\{1,2,3\\}", "\\{3,2,1\\}", True), ("\\frac{1}{3}", "0.5", False)]


def _trajectory(tokenizer, text: str, uid: str, k: int) -> Trajectory:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return Trajectory([1], ids, [0] * len(ids), [0.0] * len(ids), [0.0] * len(ids), 4, "eos", 1,
                      prompt_uid=uid, sample_idx=k)


def _score(worker: RewardWorker, trajs: list[Trajectory], rows: list[dict]) -> dict:
    """The worker's scores of every trajectory, by (uid, sample), as the driver sends them: a batch."""
    answers = worker.score(TrajectoryBatch.from_trajectories(trajs), list(range(len(trajs))), rows,
                           ScoreParts(outcome=True))
    return {a.key: a.outcome for a in answers}


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> str:
    return str(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny")))


def test_unavailable_checker_is_counted_and_stops_the_run(tiny_path, monkeypatch):
    import rewards.math_reward as math_reward

    worker = RewardWorker(0, tiny_path, "math")
    trajs = [_trajectory(worker.tokenizer, f"\\boxed{{{a}}}", f"p{i}", k)
             for i, (a, _, _) in enumerate(CASES) for k in range(2)]
    rows = [{"ground_truth_answer": CASES[int(t.prompt_uid[1:])][1]} for t in trajs]
    healthy = _score(worker, trajs, rows)
    assert [s.correct for s in healthy.values()] == [c for _, _, c in CASES for _ in range(2)]
    assert all(s.failure is None for s in healthy.values())

    monkeypatch.setattr(math_reward, "_pools", {})  # the checker's workers cannot start
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    # p0 is checked by the string fast path (no checker needed); the rest need the checker.
    trajs[0] = _trajectory(worker.tokenizer, "\\boxed{0.75}", "p0", 0)
    scores = _score(worker, trajs, rows)
    failed = [s for s in scores.values() if s.failure]
    assert len(failed) == len(trajs) - 1 and {s.failure for s in failed} == {"checker_unavailable"}
    assert all(s.reward == 0.0 and not s.correct for s in failed) and "nonexistent" in failed[0].error

    metas = TrajectoryBatch.from_trajectories(trajs).metas()
    m = rollout_metrics(metas, scores, 1.0, 0)
    assert m["reward_failed"] == len(trajs) - 1 and m["reward_failed/checker_unavailable"] == len(trajs) - 1
    assert m["reward_failed_fraction"] == pytest.approx((len(trajs) - 1) / len(trajs))
    assert m["accuracy"] == 1.0 and m["reward_mean"] == 1.0  # over the one real verdict, not 1/10
    groups = to_groups(metas, scores)  # failed samples are never trained on
    assert [(g.prompt_uid, len(g.samples)) for g in groups] == [("p0", 1)]

    with pytest.raises(RewardFailureError, match=r"step 3: no reward verdict for 9 of 10 samples "
                                                 r"\(checker_unavailable: 9\).*max_failed_fraction=0.5"):
        check_reward_failures(scores.values(), 0.5, "step 3")
    check_reward_failures(scores.values(), 0.9, "step 3")  # 0.9 of the samples: at the threshold, not past it
    check_reward_failures(healthy.values(), 0.0, "step 3")


def test_the_built_in_rewards_take_their_limits_from_the_config(tiny_path):
    cfg = compose_config(["reward.limits.math_timeout_s=0.5", "reward.limits.sandbox_memory_mb=256",
                          "reward.limits.sandbox_startup_s=2", "reward.limits.test_time_limit_s=3"])
    math = RewardWorker(0, tiny_path, "math", limits=cfg.reward.limits).fn
    code = RewardWorker(0, tiny_path, "code", limits=cfg.reward.limits).fn
    assert math.timeout == 0.5
    assert (code.limits.memory_mb, code.startup_s, code.default_time_limit) == (256, 2.0, 3.0)
    defaults = RewardLimits()  # the constants these replaced
    assert (defaults.math_timeout_s, defaults.sandbox_memory_mb, defaults.sandbox_startup_s,
            defaults.test_time_limit_s) == (5.0, 1024, 5.0, 1.0)


def test_math_checker_in_sync_threaded_and_async_actors(ray_session):
    class Checker:
        def __init__(self) -> None:
            from rewards import get_reward
            self.fn = get_reward("math")

        def check(self, answer: str, truth: str) -> dict:
            return self.fn(f"\\boxed{{{answer}}}", {"ground_truth_answer": truth})

    class AsyncChecker(Checker):
        async def check(self, answer: str, truth: str) -> dict:  # runs on the actor's event loop
            return self.fn(f"\\boxed{{{answer}}}", {"ground_truth_answer": truth})

    sync, async_ = ray.remote(Checker), ray.remote(AsyncChecker)
    actors = [sync.options(num_cpus=0).remote(), sync.options(num_cpus=0, max_concurrency=4).remote(),
              async_.options(num_cpus=0).remote()]
    try:
        for actor in actors:
            results = ray.get([actor.check.remote(a, t) for a, t, _ in CASES])
            for (a, t, equivalent), r in zip(CASES, results):
                assert "failure" not in r["info"] and r["info"]["path"] == "math_verify", r["info"]
                assert r["correct"] is equivalent, (a, t, r["info"])
    finally:
        for actor in actors:
            ray.kill(actor)


def test_nan_rewards_are_counted_not_trained_on(tiny_path):
    worker = RewardWorker(0, tiny_path, "tests.actors.broken_reward:nan")
    trajs = [_trajectory(worker.tokenizer, "\\boxed{1}", f"p{i}", k) for i in range(2) for k in range(3)]
    scores = _score(worker, trajs, [{}] * len(trajs))
    assert {s.failure for s in scores.values()} == {"invalid_reward"} and "nan" in scores[("p0", 0)].error
    metas = TrajectoryBatch.from_trajectories(trajs).metas()
    m = rollout_metrics(metas, scores, 1.0, 0)
    assert m["reward_failed/invalid_reward"] == 6 and m["reward_failed_fraction"] == 1.0
    assert all(m[k] != m[k] for k in ("reward_mean", "accuracy"))  # NaN: no figure, the logger drops it
    assert to_groups(metas, scores) == []


def test_a_run_whose_reward_never_reaches_a_verdict_stops(ray_session, tmp_path):
    cfg = compose_config(SMALL + [f"trainer.run_dir={tmp_path}", "trainer.steps=1",
                                  "task.reward=tests.actors.broken_reward:raises", "reward.max_failed_fraction=0.1"])
    with pytest.raises(RewardFailureError, match=r"step 1: no reward verdict for 16 of 16 samples "
                                                 r"\(reward_error: 16\).*checker service is down"):
        driver.run_to_end(cfg)
    assert not (tmp_path / "checkpoints").exists()  # no update was made on the broken reward
