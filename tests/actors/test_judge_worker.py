"""The judge pool: a JudgeWorker (transformers backend, tiny causal LM on disk) killed mid-step
loses no score and counts none twice; whole RL steps with the arith rule process reward (value
model) and with a judge process reward (summed reward) through the driver."""
from __future__ import annotations

import ray

from actors import driver
from actors.metrics import read_jsonl
from actors.process_stage import collect_judging, submit_judging
from rewards.judge_backends import JudgeConfig
from rewards.judging import JudgeRequest
from support import SMALL, compose_config
from tests.actors.crash_judge import CrashingJudge
from tiny_judge import write_tiny_judge


def requests(n: int, marker: str) -> list[JudgeRequest]:
    return [JudgeRequest(f"p{i // 2}", i % 2, [23 + i % 10, 18, 24, 30 + i % 3, 7, 40][: 2 + i % 5],
                         {"question": f"{i}+1=", "ground_truth_answer": str(i + 1), "crash_marker": marker})
            for i in range(n)]


def test_killed_judge_worker_loses_no_score_and_counts_none_twice(ray_session, tmp_path):
    path = str(write_tiny_judge(tmp_path / "judge", answer="1"))
    cfg = JudgeConfig(model=path, max_new_tokens=4)
    Judge = ray.remote(CrashingJudge)  # dies inside the first task it is given
    judges = [Judge.options(name=f"judge-{i}", namespace="test-judge", num_cpus=1, max_restarts=2,
                            max_task_retries=0).remote(i, cfg, path) for i in range(2)]
    try:
        reqs = requests(10, str(tmp_path / "crashed"))
        job = submit_judging(judges, reqs, outcome=True, chunk_tokens=2, per_task=3)
        scores = collect_judging(job)
        assert job.reissued >= 1 and (tmp_path / "crashed").exists()  # its queued tasks are lost too
        assert sorted(scores) == sorted((r.prompt_uid, r.sample_idx) for r in reqs)  # each exactly once
        for r in reqs:  # the rigged judge says "1": 1/10 outcome, 1 per chunk of 2 tokens
            s = scores[(r.prompt_uid, r.sample_idx)]
            assert s.outcome == 0.1 and s.scores == [1.0] * ((len(r.response_ids) + 1) // 2) and not s.failures
        # the restarted pool keeps working and gives the same verdicts
        again = collect_judging(submit_judging(judges, reqs, True, 2, per_task=4))
        assert {k: (v.outcome, v.scores) for k, v in again.items()} == {k: (v.outcome, v.scores)
                                                                       for k, v in scores.items()}
    finally:
        for j in judges:
            ray.kill(j)


def test_rl_steps_with_the_arith_rule_process_reward(ray_session, tmp_path):
    cfg = compose_config(SMALL + [f"trainer.run_dir={tmp_path}", "trainer.steps=2", "algo=tracerl_value",
                                  "reward=arith_process", "reward.outcome_weight=0.5"])
    lines = read_jsonl(driver.run_to_end(cfg).run_dir / "metrics.jsonl")
    steps = [r for r in lines if "reward_mean" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert "process/reward_mean" in r and r["judge/failures"] == 0 and r["judge_s"] >= 0
        assert r["process/chunks_per_response"] >= 1


def test_rl_step_with_a_judge_process_reward(ray_session, tmp_path):
    judge = write_tiny_judge(tmp_path / "judge", answer="1")
    cfg = compose_config(SMALL + [f"trainer.run_dir={tmp_path / 'run'}", "trainer.steps=1", "reward=judge_process",
                                  f"judge.model={judge}", "judge.max_new_tokens=4", "reward.chunk_tokens=4",
                                  "cluster.judge.num_workers=2"])
    run = driver.run_to_end(cfg)
    [r] = [r for r in read_jsonl(run.run_dir / "metrics.jsonl") if "reward_mean" in r]
    assert r["process/reward_mean"] == 1.0 and r["judge/failures"] == 0 and r["judge/reissued"] == 0
    assert len(run.pools.judge) == 2
