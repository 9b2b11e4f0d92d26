"""A vision-language RL run end to end through Ray (task=shapes, model=tiny_llada_v): image prompts decoded by
the rollout workers, scored by the multiple-choice reward, TraceRL updates re-encoding the images, the weight
sync without the frozen tower, a resume, the held-out evaluation, mode=eval on the export and the viewer's
thumbnails."""
from __future__ import annotations

import json

import pytest

from support import SMALL, compose_config
from test_run import run_to_end

BASE = SMALL + ["task=shapes", "model=tiny_llada_v", "trainer.eval_prompts=4", "trainer.checkpoint_every=1",
                "cluster.rollout.num_workers=1", "engine.lr=1e-2", "rollout.max_new_tokens=8",
                "task.reward=tests.actors.digit_reward:reward"]  # dense: every step updates; eval keeps `choice`


def test_shapes_rl_run_on_the_tiny_vision_model_resumes(ray_session, tmp_path):
    part = tmp_path / "run"
    first = run_to_end(compose_config(BASE + [f"trainer.run_dir={part}", "trainer.steps=1"]))
    lines = run_to_end(compose_config(BASE + [f"trainer.run_dir={part}", "trainer.steps=2", "trainer.eval_every=2"]))
    steps = {r["step"]: r for r in first + lines if "reward_mean" in r}
    assert sorted(steps) == [1, 2]
    assert all(r["reward_failed"] == 0 for r in steps.values())
    assert all(r["learner/trained_tokens"] > 0 for r in steps.values())
    assert steps[2]["version"] == 2  # the resumed run updated from the step-1 checkpoint's weights
    evals = [r for r in lines if "eval/accuracy" in r]
    assert evals and 0.0 <= evals[-1]["eval/accuracy"] <= 1.0
    page = (part / "trajectories.html").read_text()
    assert page.count('<img class="thumb" src="data:image/png;base64,') >= 2
    assert json.loads((part / "summary.json").read_text())["eval_prompts"] == 4
    # mode=eval on the trained export: every response's image named, and the viewer's thumbnails.
    evaluated = tmp_path / "eval"
    run_to_end(compose_config(BASE + ["mode=eval", f"model.path={part / 'checkpoints' / 'step_2' / 'hf'}",
                                      f"trainer.run_dir={evaluated}"]))
    samples = [json.loads(line) for line in (evaluated / "eval_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and all(s["image"].startswith("data:image/png;base64,") for s in samples)
    assert (evaluated / "trajectories.html").read_text().count('<img class="thumb"') == 4


def test_image_task_on_a_text_model_is_refused_naming_the_keys(tmp_path):
    from actors.start import start_run

    cfg = compose_config(SMALL + ["task=shapes", "model=tiny", f"trainer.run_dir={tmp_path}"])
    with pytest.raises(ValueError, match=r"task.name='shapes' gives image prompts, but model.name='tiny' "
                                         r"\(model.family=tiny\) takes no images"):
        start_run(cfg)
