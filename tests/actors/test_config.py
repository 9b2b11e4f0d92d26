"""Configs: every group composes and validates; bad ones fail before Ray starts, naming the key."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf.errors import MissingMandatoryValue

from actors.config import ConfigError
from actors.configure import check_files
from actors.modes import mode_for
from learner.objectives import REFERENCE_SFT
from models.checkpoint import weights_fingerprint
from models.tiny import write_tiny_checkpoint
from support import REPO, compose_config

GROUPS = {name: sorted(p.stem for p in (REPO / "conf" / name).glob("*.yaml"))
          for name in ("model", "algo", "task", "rollout", "cluster", "mode", "reward", "judge")}
NEEDS_PATH = {"model": "model.path=/ckpt", "task": "task.params.path=/data.jsonl"}
GENERATED = ("tiny", "tiny_llada_v", "arith", "countdown", "digits", "shapes")  # built in code: no path


def test_default_config():
    cfg = compose_config([])
    assert (cfg.model.name, cfg.algo.name, cfg.task.name) == ("tiny", "tracerl", "arith")
    assert cfg.rollout.strategy == "static" and cfg.rollout.temperature == 1.0  # the recipe that learns
    assert cfg.cluster.rollout.num_workers >= 1 and cfg.async_.max_staleness == 0 and cfg.ray.address is None


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_group_option_validates(group, option):
    extra = [NEEDS_PATH[group]] if group in NEEDS_PATH and option not in GENERATED else []
    if option in REFERENCE_SFT:
        extra.append("mode=sft")  # trained on reference solutions, not rollouts
    if option == "eval":
        extra.append("model.path=/ckpt")
    if option in ("qa_jsonl_judged", "judge_process", "judge_outcome"):
        extra.append("judge.model=/judge")
    if group == "model" and option in ("llada_8b", "dream_7b", "llada_v"):
        extra.append("rollout.max_new_tokens=256")  # full-attention blocks of 32 must divide it
    cfg = compose_config([f"{group}={option}"] + extra)
    assert getattr(cfg, group) is not None


@pytest.mark.parametrize("override,key,hint", [
    ("algo.name=ppo", "algo.name", "tracerl"),
    ("cluster.rollout.num_workers=-1", "cluster.rollout.num_workers", "greater than or equal to 1"),
    ("rollout.block_size=8", "rollout.block_size", "model.block_size=4"),
    ("async.max_staleness=2", "async.max_staleness", "0 or 1"),
    ("weight_sync.transport=nvlink", "weight_sync.transport", "shared_memory, collective, nccl"),
    ("+trainer.stepz=3", "trainer.stepz", "Extra inputs"),
    ("mode=eval", "model.path", "mode=eval"),
    ("algo=sft_semi_ar", "algo.name", "mode='rl'"),
    ("mode=sft algo=tracerl", "algo.name", "mode='sft'"),
    ("trainer.eval_samples=4", "trainer.eval_greedy=false", "avg@k"),
    ("cluster.colocate=true cluster.rollout.num_workers=1 async.max_staleness=1", "async.max_staleness",
     "cluster.colocate"),
    ("cluster.colocate=true cluster.rollout.num_workers=1 engine.backend=deepspeed engine.zero_stage=1",
     "engine.zero_stage 2 or 3", "offload_states"),
    ("reward=judge_process", "judge.model", "reward.process='judge'"),
    ("reward.process=tasks.builtin.arith:nope", "reward", "cannot load process reward"),
    ("judge.backend=sglang", "judge.backend", "'transformers' or 'vllm'"),
    ("reward.limits.math_timeout_s=0", "reward.limits.math_timeout_s", "greater than 0"),
    ("cluster.rollout.num_workers=2 +cluster.rollout.min_workers=3", "cluster.rollout",
     "min_workers (3) must be at most num_workers (2)"),
    ("+cluster.learner.min_workers=1", "cluster.learner.min_workers", "fixed-size"),
    ("algo.advantage.refill_rounds=-1", "algo.advantage.refill_rounds", "greater than or equal to 0"),
    ("algo.advantage.refill_rounds=2 async.max_staleness=1", "algo.advantage.refill_rounds=2",
     "async.max_staleness=0"),
    ("async.max_staleness=1", "algo.advantage.refill_rounds=4", "add algo.advantage.refill_rounds=0"),  # tracerl's
    ("algo=sft_trace +algo.advantage.refill_rounds=2", "algo.advantage.refill_rounds=2", "algo.name='sft_trace'"),
    ("algo.advantage.scale=mad", "algo.advantage.scale", "'std' or 'none'"),
    ("task.name=nope", "task.name", "'arith', 'code_jsonl'"),  # these two failed only after Ray started
    ("task.reward=nope", "task.reward", "'choice', 'code', 'math'"),
    # A misspelled knob failed after Ray started, as the task factory's TypeError
    ("+task.params.max_digit=3", "task.params.max_digit", "'max_digits', 'min_digits'"),
    ("task=math_jsonl task.params.path=/data.jsonl +task.params.pth=x", "task.params.pth", "'path', 'reward'"),
    ("task=image_json task.params.path=/data.json +task.params.min_image_size=8", "task.params.min_image_size",
     "'min_image_side'"),
    ("+eval_rollout.temprature=0.5", "eval_rollout.temprature", "Extra inputs"),  # was named as a top-level key
    ("algo=agrpo trainer.responses_per_prompt=1", "trainer.responses_per_prompt=1", "at least 2"),  # was accepted
    # algo.temperature is copied from rollout.temperature: the error named only the key the user never set
    ("rollout.temperature=0", "rollout.temperature", "algo.temperature"),
    ("engine.total_steps=0", "engine.total_steps=0", "before the first step"),  # was accepted: lr at its minimum
])
def test_bad_config_names_the_key(override, key, hint):
    with pytest.raises(ConfigError) as err:
        compose_config(override.split())
    assert key in str(err.value) and hint in str(err.value)


def test_one_response_per_prompt_is_fine_where_a_value_model_learns_raw_rewards():
    # No group advantage then: the value model's baseline gives each token its advantage.
    cfg = compose_config("algo=tracerl_value trainer.responses_per_prompt=1 algo.value.outcome=reward "
                         "algo.advantage.drop_zero_advantage=false".split())
    assert cfg.trainer.responses_per_prompt == 1
    with pytest.raises(ConfigError, match="responses_per_prompt=1"):  # every group of one would be dropped
        compose_config("algo=tracerl_value trainer.responses_per_prompt=1 algo.value.outcome=reward".split())


@pytest.mark.parametrize("override,key", [
    ("cluster.learner.num_workers=0", "cluster.learner.num_workers"),
    ("model.path=/nonexistent", "model.path"),  # was a tokenizer's FileNotFoundError once Ray had started
])
def test_launch_rejects_bad_config_before_ray_starts(tmp_path, override, key):
    out = subprocess.run([sys.executable, "launch.py", override, f"trainer.run_dir={tmp_path}"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert key in out.stderr
    assert "Ray" not in out.stdout + out.stderr and not any(Path(tmp_path).iterdir())


@pytest.mark.parametrize("override,key,hint", [
    # Each failed only after Ray had started, in actors.start.start_run, most without naming the key
    ("model.path={tmp}/missing", "model.path", "missing/config.json does not exist"),
    ("model.path={tmp}", "model.path", "config.json does not exist"),  # a directory, but no checkpoint
    ("task=math_jsonl task.params.path={tmp}/missing.jsonl", "task.params.path", "does not exist"),
    ("task=math_jsonl task.params.path={tmp}/train.jsonl task.params.eval_path={tmp}/missing.jsonl",
     "task.params.eval_path", "does not exist"),
    ("trainer.resume=sometimes", "trainer.resume", "auto, never or a complete checkpoint directory"),
    ("trainer.resume={tmp}", "trainer.resume", "no driver.json"),
])
def test_files_the_driver_reads_are_checked_before_ray_starts(tmp_path, override, key, hint):
    (tmp_path / "train.jsonl").write_text('{"question": "1+1", "ground_truth_answer": "2"}\n')
    cfg = compose_config(override.format(tmp=tmp_path).split() + [f"trainer.run_dir={tmp_path}/run"])
    with pytest.raises(ConfigError) as err:
        check_files(cfg)
    assert key in str(err.value) and hint in str(err.value)


def test_files_that_exist_pass(tmp_path):
    model = write_tiny_checkpoint(tmp_path / "model")
    (tmp_path / "train.jsonl").write_text('{"question": "1+1", "ground_truth_answer": "2"}\n')
    step = tmp_path / "run" / "checkpoints" / "step_2"
    for part in ("learner", "hf"):
        (step / part).mkdir(parents=True)
    (step / "driver.json").write_text("{}")
    (step / "hf" / "config.json").write_text("{}")
    for overrides in ([], [f"model.path={model}", "task=math_jsonl", f"task.params.path={tmp_path}/train.jsonl",
                           f"task.params.eval_path={tmp_path}/train.jsonl", f"trainer.resume={step}"]):
        check_files(compose_config(overrides + [f"trainer.run_dir={tmp_path}/run"]))


def test_warm_start_cache_key_follows_only_what_the_warm_up_reads(tmp_path):
    start = write_tiny_checkpoint(tmp_path / "start")

    def key(*overrides: str, weights: Path = start) -> Path:
        cfg = compose_config(list(overrides))
        return mode_for(cfg).warm_dir(cfg, str(weights))

    base, base_fingerprint = key(), weights_fingerprint(start)
    # The weights themselves: a copy elsewhere shares the entry, other weights with the same config do not
    shutil.copytree(start, tmp_path / "copy")
    assert key(weights=tmp_path / "copy") == base
    assert key(weights=write_tiny_checkpoint(tmp_path / "other", seed=1)) != base
    # Past hash_up_to bytes the files are known by name, size and modification time (not read)
    weights = next(start.glob("*.safetensors"))
    before = weights_fingerprint(start, hash_up_to=0)
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1))
    assert weights_fingerprint(start, hash_up_to=0) != before and weights_fingerprint(start) == base_fingerprint
    # RL knobs, the RL learning rate and a warm-up algo knob SFT never reads leave the cache valid
    assert key("algo.kl_beta=0.1", "engine.lr=1e-4", "+warmup.algo.eps_low=0.3", "trainer.steps=7") == base
    for changed in ("+warmup.algo.mask_ratio=[0.2,1.0]", "warmup.steps=501", "warmup.lr=2e-3", "trainer.seed=1",
                    "task.train_size=100", "model.block_size=8"):
        assert key(changed) != base, changed


@pytest.mark.parametrize("task", ["math_jsonl", "code_jsonl", "image_json", "qa_jsonl_judged"])
def test_file_task_without_a_path_names_the_key(task):
    # A null path used to pass validation and fail after Ray started, in get_task (a TypeError naming nothing).
    with pytest.raises(MissingMandatoryValue) as err:
        compose_config([f"task={task}", "judge.model=/judge"])
    assert "task.params.path" in str(err.value)
