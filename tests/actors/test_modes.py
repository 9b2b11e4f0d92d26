"""The other ways to drive a run: mode=sft (reference solutions), mode=eval (no learners; avg@k,
pass@k), algo=sft_trace (self-SFT on correct rollouts) and trainer.max_wall_s."""
from __future__ import annotations

import json
from collections import defaultdict

from actors import driver
from actors.metrics import read_jsonl
from support import SMALL, compose_config
from tasks.registry import get_task


def test_sft_mode_then_eval_mode_with_k_samples(ray_session, tmp_path):
    sft_dir, eval_dir = tmp_path / "sft", tmp_path / "eval"
    driver.run_to_end(compose_config(SMALL + ["mode=sft", "trainer.steps=3", f"trainer.run_dir={sft_dir}"]))
    steps = [r for r in read_jsonl(sft_dir / "metrics.jsonl") if "learner/sft_loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3] and all("rollout_s" not in r for r in steps)
    hf = sft_dir / "checkpoints" / "step_3" / "hf"
    assert (hf / "config.json").is_file()

    k, prompts = 3, 6
    cfg = compose_config(SMALL + ["mode=eval", f"model.path={hf}", f"trainer.run_dir={eval_dir}",
                                  f"trainer.eval_samples={k}", "trainer.eval_greedy=false",
                                  f"trainer.eval_prompts={prompts}"])
    run = driver.run_to_end(cfg)
    assert run.learner is None and run.places.learner is None  # no learner ranks, no bundles for them
    summary = json.loads((eval_dir / "eval.json").read_text())
    samples = read_jsonl(eval_dir / "eval_samples.jsonl")
    assert len(samples) == k * prompts and summary["samples_per_prompt"] == k
    # every verdict is the task's own reward on the decoded text, and the figures follow from them
    reward = get_task(cfg.task.name, **cfg.task.params).reward
    rows = dict(run.rollout.eval_rows)
    by_uid: dict[str, list[bool]] = defaultdict(list)
    for s in samples:
        assert reward(s["response"], rows[s["uid"]])["correct"] == s["correct"]
        by_uid[s["uid"]].append(s["correct"])
    assert summary["accuracy"] == sum(s["correct"] for s in samples) / len(samples)
    assert summary["pass_at_k"] == sum(any(v) for v in by_uid.values()) / prompts
    assert summary["tokens_per_forward"] > 0 and summary["response_len"] > 0


def test_sft_trace_trains_on_correct_rollouts_and_max_wall_s_stops(ray_session, tmp_path):
    cfg = compose_config(SMALL + ["algo=sft_trace", "task.reward=tests.actors.digit_reward:any_digit",
                                  "trainer.steps=50", "trainer.max_wall_s=0.001", f"trainer.run_dir={tmp_path}"])
    driver.run_to_end(cfg)
    (step,) = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "rollout_s" in r]
    assert step["step"] == 1  # the time limit ends the run after its first step, with a checkpoint
    assert (tmp_path / "checkpoints" / "step_1" / "hf" / "config.json").is_file()
    correct = round(step["accuracy"] * step["samples"])
    assert 0 < correct < step["samples"]
    assert step["trained_samples"] == correct and step["learner/sft_loss"] > 0
