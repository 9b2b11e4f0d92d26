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


def test_anyres_prompts_get_each_images_own_placeholder_count(tmp_path):
    """A released LLaDA-V's anyres views: the run's prompt builder gives every image as many placeholders
    as its size makes features (no Ray)."""
    from PIL import Image

    from actors.start import prompt_encoder
    from models.checkpoint import load_config
    from models.tiny import TINY_ANYRES, write_tiny_checkpoint
    from models.tokenizer import load_tokenizer
    from models.vision import image_placeholders
    from tasks.images import data_uri
    from tasks.registry import get_task

    path = write_tiny_checkpoint(tmp_path / "anyres", family="llada_v", **TINY_ANYRES)
    cfg = compose_config(BASE + [f"model.path={path}", f"trainer.run_dir={tmp_path / 'run'}"])
    encode = prompt_encoder(cfg, get_task(cfg.task.name, **cfg.task.params), load_tokenizer(path), str(path))
    model_cfg = load_config(path)
    counts = []
    for size in [(32, 32), (50, 20), (90, 70)]:
        picture = Image.new("RGB", size, (200, 30, 30))
        ids = encode({"question": "Which?", "ground_truth_answer": "A", "image": data_uri(picture)})
        counts.append(sum(i >= model_cfg.vocab_size for i in ids))
        assert [i for i in ids if i >= model_cfg.vocab_size] == image_placeholders(model_cfg, picture)
    assert counts == [36, 52, 51] and max(counts) <= model_cfg.image_tokens
