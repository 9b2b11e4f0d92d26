"""The default main job through `python launch.py`, at a very small scale: the run directory holds
everything a user is promised, and the reported held-out accuracy is what the real sampler and the
real reward give on the exported policy (recomputed here, outside Ray)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from models.checkpoint import load_model
from models.tokenizer import load_tokenizer
from rewards import get_reward
from rollout.params import SamplingParams
from rollout.sampler import generate
from tasks.prompts import encode_prompt
from tasks.registry import get_task

REPO = Path(__file__).resolve().parents[2]
EVAL_PROMPTS = 24


def test_default_launch_writes_the_promised_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [
        f"trainer.run_dir={run_dir}",
        "warmup.steps=40",
        f"warmup.cache_dir={tmp_path}/warm",
        "trainer.steps=2",
        "trainer.prompts_per_step=4",
        "trainer.eval_every=2",
        f"trainer.eval_prompts={EVAL_PROMPTS}",
        "trainer.progress=false",
        "trainer.checkpoint_every=2",
        "cluster.rollout.num_workers=1",
        "ray.include_dashboard=false",
    ]
    done = subprocess.run(
        [sys.executable, "launch.py", *overrides], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "held-out arith accuracy" in done.stdout  # the before/after table
    (warm,) = (tmp_path / "warm").iterdir()  # the warm start is cached for the next run
    assert (warm / "config.json").is_file() and (warm / "tokenizer.json").is_file()

    summary = json.loads((run_dir / "summary.json").read_text())
    assert {"acc_before", "acc_after", "wall_s", "steps"} <= set(summary) and summary["steps"] == 2
    assert summary["wall_s"] > 0
    # dynamic commits at least the static schedule every pass, so it never needs more forwards
    assert summary["dynamic_tokens_per_forward"] >= summary["static_tokens_per_forward"] > 0
    assert (run_dir / "metrics.jsonl").stat().st_size > 0
    assert list(run_dir.glob("tensorboard/events.out.tfevents.*"))
    assert (run_dir / "curves.png").stat().st_size > 0
    page = (run_dir / "trajectories.html").read_text()
    assert "static" in page and "dynamic" in page and 'title="step 1"' in page

    # Recompute the final held-out accuracy from the exported weights, with no Ray in the loop.
    hf = run_dir / "checkpoints" / "step_2" / "hf"
    model, tokenizer = load_model(hf).eval(), load_tokenizer(hf)
    cfg = json.loads((run_dir / "config.json").read_text())
    task = get_task("arith", **cfg["task"]["params"])
    rows = task.eval_rows(EVAL_PROMPTS, cfg["task"]["split_seed"])
    prompts = [encode_prompt(r, tokenizer, task.template, task.kind) for r in rows]
    r = cfg["rollout"]
    params = SamplingParams(
        block_size=r["block_size"],
        steps_per_block=r["steps_per_block"],
        strategy=r["strategy"],
        temperature=0.0,
        max_new_tokens=r["max_new_tokens"],
    )
    reward = get_reward(task.reward_path)
    trajs = generate(model, prompts, params)
    correct = [
        reward(tokenizer.decode(t.response_ids, skip_special_tokens=True), row)["correct"]
        for t, row in zip(trajs, rows)
    ]
    assert summary["acc_after"] == sum(correct) / len(correct)

    # `python launch.py mode=eval` on that checkpoint reports the same held-out accuracy.
    eval_dir = tmp_path / "eval"
    done = subprocess.run(
        [
            sys.executable,
            "launch.py",
            "mode=eval",
            f"model.path={hf}",
            f"trainer.run_dir={eval_dir}",
            f"trainer.eval_prompts={EVAL_PROMPTS}",
            "trainer.progress=false",
            "cluster.rollout.num_workers=1",
            "ray.include_dashboard=false",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "avg@1 accuracy" in done.stdout
    evaluated = json.loads((eval_dir / "eval.json").read_text())
    assert evaluated["accuracy"] == evaluated["pass_at_k"] == summary["acc_after"]
    assert evaluated["prompts"] == EVAL_PROMPTS and evaluated["strategy"] == "static"
