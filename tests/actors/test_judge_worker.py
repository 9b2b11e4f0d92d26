"""The judge on the reward route: a JudgeWorker (transformers backend, tiny causal LM on disk) killed
mid-step loses no answer and counts none twice, its call going to the next judge; a whole RL step
with a judge process reward (summed reward) through the driver."""
from __future__ import annotations

import ray

from actors import driver
from actors.metrics import read_jsonl
from actors.rollout_group import RolloutGroup, records_for
from actors.start import start_run
from support import SMALL, compose_config
from tests.actors.crash_judge import CrashingJudge
from tiny_judge import write_tiny_judge

JUDGED = ["reward=judge_process", "reward.outcome=judge", "judge.max_new_tokens=4", "reward.chunk_tokens=2",
          "reward.judge_batch=3", "cluster.judge.num_workers=1", "trainer.logger=[]"]


def test_killed_judge_worker_loses_no_answer_and_counts_none_twice(ray_session, tmp_path):
    judge = write_tiny_judge(tmp_path / "judge", answer="1")
    cfg = compose_config(SMALL + JUDGED + [f"trainer.run_dir={tmp_path / 'run'}", f"judge.model={judge}"])
    run = start_run(cfg)
    Judge = ray.remote(CrashingJudge)  # dies inside the first call it is given
    judges = [Judge.options(num_cpus=1, max_restarts=2, max_task_retries=0).remote(
        i, cfg.judge, str(judge), cfg.reward.chunk_tokens, cfg.reward.judge_correct_at) for i in range(2)]
    try:
        rollout = RolloutGroup(cfg, run.rollout.workers, run.rollout.rewarders, judges, run.learner,
                               run.rollout.encode)
        records = records_for([f"p{i}" for i in range(5)], [[23 + i, 18, 24, 30] for i in range(5)], 2)
        rows = {f"p{i}": {"question": f"{i}+1=", "ground_truth_answer": str(i + 1),
                          "crash_marker": str(tmp_path / "crashed")} for i in range(5)}
        job = rollout.submit(records, rows, cfg.rollout, rollout.route)
        decoded, scores, process = rollout.collect(job)
        assert job.reissued["judge"] >= 1 and (tmp_path / "crashed").exists()
        keys = sorted((r.uid, r.sample_idx) for r in records)
        assert sorted(scores) == sorted(process) == keys  # each answered exactly once
        for m in decoded:  # the rigged judge says "1": 1/10 outcome, 1 per chunk of 2 tokens
            assert scores[m.key].reward == 0.1 and scores[m.key].failure is None
            assert process[m.key].scores == [1.0] * ((m.response_len + 1) // 2) and not process[m.key].failures
        # the restarted pool keeps working and gives the same verdicts
        _, again, again_process = rollout.collect(rollout.submit(records, rows, cfg.rollout, rollout.route))
        assert again == scores and {k: p.scores for k, p in again_process.items()} == {
            k: p.scores for k, p in process.items()}
    finally:
        for j in judges:
            ray.kill(j)
        run.close()


def test_rl_step_with_a_judge_process_reward(ray_session, tmp_path):
    judge = write_tiny_judge(tmp_path / "judge", answer="1")
    cfg = compose_config(SMALL + [f"trainer.run_dir={tmp_path / 'run'}", "trainer.steps=1", "reward=judge_process",
                                  f"judge.model={judge}", "judge.max_new_tokens=4", "reward.chunk_tokens=4",
                                  "cluster.judge.num_workers=2"])
    run = driver.run_to_end(cfg)
    [r] = [r for r in read_jsonl(run.run_dir / "metrics.jsonl") if "reward_mean" in r]
    assert r["process/reward_mean"] == 1.0 and r["judge/failures"] == 0 and r["reissued"] == 0
    assert len(run.rollout.judges) == 2
