"""Learner faults: a learner rank killed mid-step is replaced (the whole group recreated, rank 0
first, restored from the last checkpoint) and the run replays to the same per-step metrics as the
uninterrupted run; past trainer.max_learner_restarts the run stops with an error naming what
`resume=auto` continues from."""
from __future__ import annotations

from pathlib import Path

import pytest

from actors import driver
from actors.learner_group import LearnerGroupLost
from actors.metrics import read_jsonl
from actors.start import namespace_for
from actors.weight_sync.shared_memory import slot_paths
from bench.chaos import Fault, Injector, comparable, differences
from support import SMALL, compose_config

DS2 = ["cluster.learner.num_workers=2", "engine.backend=deepspeed", "engine.zero_stage=2"]
BASE = SMALL + ["task.reward=tests.actors.digit_reward:reward", "engine.lr=1e-2", "cluster.rollout.num_workers=1",
                "trainer.logger=[]"]


def _run(overrides: list[str], faults: list[Fault] = ()):
    cfg = compose_config(BASE + overrides)
    injector = Injector(list(faults), namespace_for(cfg, Path(cfg.trainer.run_dir)))
    try:
        run = driver.run_to_end(cfg, hooks=injector)
    finally:
        injector.stop()
    return run, read_jsonl(run.run_dir / "metrics.jsonl"), injector


def test_learner_rank_killed_mid_step_is_replaced_and_the_run_replays(ray_session, tmp_path):
    common = DS2 + ["trainer.steps=4", "trainer.checkpoint_every=2"]
    _, full_lines, _ = _run(common + [f"trainer.run_dir={tmp_path / 'full'}"])
    # learner-1 dies while step 3's update is in flight: restored from step 2's checkpoint.
    run, lines, injector = _run(common + [f"trainer.run_dir={tmp_path / 'faulty'}"], [Fault(3, "learner", 1, 0.1)])
    assert injector.fired and run.learner.restarts == 1
    assert [r["step"] for r in lines if "reward_mean" in r] == [1, 2, 3, 4]  # each step logged once
    full = comparable(full_lines)
    assert differences(comparable(lines), full) == []  # every figure of every step but timings
    assert full[4]["reward_mean"] != full[1]["reward_mean"]  # the run really moved


def test_learner_restarts_are_bounded_and_replays_overwrite_logged_steps(ray_session, tmp_path):
    """No checkpoint yet: the first death replays from the start (step 1 is logged again, not twice);
    the second is one more than trainer.max_learner_restarts=1 allows. The dead rank 0 never closed
    its shared-memory slots: the driver removes them as the run stops."""
    slots = slot_paths(namespace_for(compose_config([f"trainer.run_dir={tmp_path}"]), tmp_path))
    with pytest.raises(LearnerGroupLost, match=r"trainer.max_learner_restarts=1.*resume=auto.*from the start"):
        _run(["trainer.steps=3", "trainer.checkpoint_every=0", "trainer.max_learner_restarts=1",
              f"trainer.run_dir={tmp_path}"], [Fault(2, "learner", 0, 0.0), Fault(3, "learner", 0, 0.0)])
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "reward_mean" in r] == [1, 2]
    assert not any(p.exists() for p in slots)
