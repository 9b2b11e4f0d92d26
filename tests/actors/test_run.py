"""End to end on the tiny model: a 2-step TraceRL run with the value model and the arith rule process
reward (2 rollout, 2 reward, 2 learner ranks on DeepSpeed ZeRO-2 over gloo), its metrics,
TensorBoard files and checkpoint; its RL steps never bring a trajectory to the driver, process
rewards included (they are scored in the reward workers and placed on tokens by the learner ranks)."""
from __future__ import annotations

import json
from typing import Any

import pytest
import ray

import actors.modes
from actors import driver
from actors.metrics import read_jsonl
from rollout.trajectory import Trajectory
from rollout.trajectory_batch import RowMeta, TrajectoryBatch
from support import SMALL, compose_config

DS2 = ["cluster.learner.num_workers=2", "cluster.reward.num_workers=2", "engine.backend=deepspeed",
       "engine.zero_stage=2"]


def run_to_end(cfg) -> list[dict]:
    """A whole run through the driver; its metrics.jsonl lines."""
    return read_jsonl(driver.run_to_end(cfg).run_dir / "metrics.jsonl")


def flatten(obj: Any) -> list[Any]:
    if isinstance(obj, (list, tuple)):
        return [x for o in obj for x in flatten(o)]
    if isinstance(obj, dict):
        return flatten(list(obj.values()))
    return [obj]


def test_two_step_tracerl(ray_session, tmp_path, monkeypatch):
    cfg = compose_config(SMALL + DS2 + [f"trainer.run_dir={tmp_path}", "trainer.steps=2", "trainer.eval_every=2",
                                        "task.reward=tests.actors.digit_reward:reward", "algo=tracerl_value",
                                        "reward=arith_process", "trainer.plot=true", "algo.value.lr_scale=5"])
    received: list[Any] = []  # everything the driver's ray.get returned during the RL steps
    real_get, real_step = ray.get, actors.modes.rl_step

    def spied_step(run: Any) -> dict[str, float]:
        with monkeypatch.context() as m:
            m.setattr(ray, "get", lambda *a, **k: received.append(real_get(*a, **k)) or received[-1])
            return real_step(run)

    monkeypatch.setattr(actors.modes, "rl_step", spied_step)
    lines = run_to_end(cfg)
    got = flatten(received)
    assert sum(isinstance(x, RowMeta) for x in got) == 2 * 16  # the rows' metadata came, and only it
    assert not [x for x in got if isinstance(x, (Trajectory, TrajectoryBatch))]
    steps = [r for r in lines if "reward_mean" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert r["prompts"] == 4 and r["samples"] == 16 and r["reissued"] == 0
        assert r["rollout_s"] > 0 and r["tokens_per_forward"] > 0 and r["staleness"] == 0
        assert "skipped" not in r and r["update_s"] > 0 and r["learner_tokens_per_s"] > 0
        assert r["process/chunks_per_response"] >= 1 and r["judge/failures"] == 0 and "learner/value_loss" in r
        assert r["learner/value_lr"] == pytest.approx(5 * r["learner/lr"])  # algo.value.lr_scale
    assert [r["version"] for r in steps] == [1, 2] and steps[1]["sync_s"] > 0
    assert any("eval/accuracy" in r for r in lines)
    assert list(tmp_path.glob("tensorboard/events.out.tfevents.*"))
    assert (tmp_path / "curves.png").is_file()
    ckpt = tmp_path / "checkpoints" / "step_2"
    assert json.loads((ckpt / "driver.json").read_text())["step"] == 2
    assert (ckpt / "hf" / "config.json").is_file()
