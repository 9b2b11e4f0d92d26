"""End of a run: summary.json, the before/after table, and the static-vs-dynamic trajectory viewer."""
from __future__ import annotations

import json
import logging

from rich.console import Console
from rich.table import Table

from .evaluate import eval_figures, write_viewer
from .metrics import read_jsonl
from .payloads import fetch
from .run import Run

log = logging.getLogger(__name__)
VIEWER_SAMPLES = 6


def write_report(run: Run, wall_s: float) -> dict[str, float]:
    evals = [m for m in read_jsonl(run.run_dir / "metrics.jsonl") if "eval/accuracy" in m]
    if not evals:
        log.warning("no evaluation was logged (trainer.eval_every=0): no summary")
        return {}
    base = run.cfg.eval_params().model_copy(update={"temperature": 0.0})
    static = base.model_copy(update={"strategy": "static", "steps_per_block": base.block_size})
    dynamic = base.model_copy(update={"strategy": "dynamic"})
    (s_m, s_decoded, _), (d_m, d_decoded, _) = eval_figures(run, static), eval_figures(run, dynamic)
    best = max(evals, key=lambda m: m["eval/accuracy"])  # the first of equal bests, as keep_best keeps
    summary = {
        "acc_before": evals[0]["eval/accuracy"], "acc_after": evals[-1]["eval/accuracy"],
        "acc_best": best["eval/accuracy"], "best_step": int(best["step"]),
        "wall_s": round(wall_s, 1), "steps": run.state.step, "eval_prompts": len(run.rollout.eval_rows),
        "static_acc": s_m["accuracy"], "static_tokens_per_forward": s_m["tokens_per_forward"],
        "dynamic_acc": d_m["accuracy"], "dynamic_tokens_per_forward": d_m["tokens_per_forward"],
        "dynamic_threshold": dynamic.threshold,
    }
    (run.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    sections = {f"static (1 token / pass), accuracy {s_m['accuracy']:.3f}": fetch(s_decoded[:VIEWER_SAMPLES]),
                f"dynamic (τ = {dynamic.threshold}), accuracy {d_m['accuracy']:.3f}": fetch(d_decoded[:VIEWER_SAMPLES])}
    write_viewer(run, f"{run.cfg.task.name} · {run.cfg.algo.name} · step {run.state.step}",
                 {name: [(t, f"{t.prompt_uid}") for t in trajs] for name, trajs in sections.items()})
    table = Table(title=f"held-out {run.cfg.task.name} accuracy ({len(run.rollout.eval_rows)} prompts, greedy)")
    for col in ("", "accuracy", "tokens / forward"):
        table.add_column(col)
    table.add_row("warm start (before RL)", f"{summary['acc_before']:.3f}", "")
    table.add_row(f"after {run.state.step} steps", f"{summary['acc_after']:.3f}", "")
    table.add_row(f"best (step {summary['best_step']})", f"{summary['acc_best']:.3f}", "")
    table.add_row("  static decoding", f"{s_m['accuracy']:.3f}", f"{s_m['tokens_per_forward']:.2f}")
    table.add_row(f"  dynamic decoding (τ={dynamic.threshold})", f"{d_m['accuracy']:.3f}",
                  f"{d_m['tokens_per_forward']:.2f}")
    Console().print(table)
    log.info("summary: %s", json.dumps(summary))
    return summary
