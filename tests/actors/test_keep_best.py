"""trainer.keep_best: the best held-out evaluation's policy is kept as checkpoints/best/hf, beside
the last checkpoints and never pruned by keep_last; a resumed run still knows it; summary.json
reports it next to the last step's accuracy. The reward trains away from what the held-out accuracy
counts (tests/actors/digit_reward.py:away_from_digits), so the accuracy peaks before the end."""
from __future__ import annotations

import json

from actors import driver
from actors.metrics import read_jsonl
from support import SMALL, compose_config

BASE = SMALL + ["task.reward=tests.actors.digit_reward:away_from_digits", "engine.lr=5e-2", "trainer.eval_every=1",
                "trainer.checkpoint_every=1", "trainer.keep_last=1", "trainer.eval_prompts=16"]


def test_best_export_survives_keep_last_and_resume(ray_session, tmp_path):
    run_dir = tmp_path / "run"
    driver.run_to_end(compose_config(BASE + [f"trainer.run_dir={run_dir}", "trainer.steps=2"]))
    first = json.loads((run_dir / "checkpoints" / "best" / "best.json").read_text())
    driver.run_to_end(compose_config(BASE + [f"trainer.run_dir={run_dir}", "trainer.steps=3"]))  # resumes at 2
    evals = {r["step"]: r["eval/accuracy"] for r in read_jsonl(run_dir / "metrics.jsonl") if "eval/accuracy" in r}
    assert sorted(evals) == [0, 1, 2, 3]
    best_step = max(evals, key=evals.get)  # the first of equal bests
    assert best_step < 3 and evals[best_step] > evals[3]  # the accuracy peaked before the end
    best = json.loads((run_dir / "checkpoints" / "best" / "best.json").read_text())
    assert best == {"step": best_step, "accuracy": evals[best_step]}
    if first["step"] == best_step:  # found before the resume: the resumed run kept it
        assert first == best
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["acc_best"], summary["best_step"], summary["acc_after"]) == (evals[best_step], best_step, evals[3])
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == ["best", "step_3"]  # keep_last=1 pruned step_1 and step_2, not the best export
    # The export is that step's policy: decoding it alone gives the accuracy logged at that step.
    eval_dir = tmp_path / "eval"
    driver.run_to_end(compose_config(BASE + ["mode=eval", f"trainer.run_dir={eval_dir}",
                                             f"model.path={run_dir / 'checkpoints' / 'best' / 'hf'}"]))
    assert json.loads((eval_dir / "eval.json").read_text())["accuracy"] == evals[best_step]
