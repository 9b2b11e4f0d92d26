"""End of a run: summary.json, the before/after table, and the static-vs-dynamic trajectory viewer."""
from __future__ import annotations

import json
import logging
import time

from rich.console import Console
from rich.table import Table

from rewards.result import Score
from rollout.params import SamplingParams
from rollout.trajectory import Trajectory
from rollout.viewer import render_html

from .metrics import read_jsonl
from .run import Run
from .stages import collect, submit
from .step_data import records_for, rollout_metrics

log = logging.getLogger(__name__)
VIEWER_SAMPLES = 6


def decode_eval(run: Run, params: SamplingParams, samples: int = 1, prefix: str = "",
                progress: bool = False) -> tuple[dict[str, float], list[Trajectory], dict[tuple[str, int], Score]]:
    """Decode the held-out prompts (`samples` each) with `params` on the rollout pool and score
    them; metrics, trajectories in eval order, and their scores."""
    start = time.perf_counter()
    records = records_for(list(run.eval_rows), run.eval_prompts, samples)
    trajs, scores = collect(run.pools, submit(run.pools, records, run.eval_rows, params), run.version,
                            run.cfg.trainer.reward_chunk, progress)
    order = {uid: i for i, uid in enumerate(run.eval_rows)}
    trajs.sort(key=lambda t: (order[t.prompt_uid], t.sample_idx))
    return rollout_metrics(trajs, scores, time.perf_counter() - start, run.version, prefix=prefix), trajs, scores


def write_report(run: Run, wall_s: float) -> dict[str, float]:
    evals = [m for m in read_jsonl(run.run_dir / "metrics.jsonl") if "eval/accuracy" in m]
    if not evals:
        log.warning("no evaluation was logged (trainer.eval_every=0): no summary")
        return {}
    base = run.cfg.eval_params().model_copy(update={"temperature": 0.0})
    static = base.model_copy(update={"strategy": "static", "steps_per_block": base.block_size})
    dynamic = base.model_copy(update={"strategy": "dynamic"})
    (s_m, s_trajs, _), (d_m, d_trajs, _) = decode_eval(run, static), decode_eval(run, dynamic)
    summary = {
        "acc_before": evals[0]["eval/accuracy"], "acc_after": evals[-1]["eval/accuracy"],
        "wall_s": round(wall_s, 1), "steps": run.step, "eval_prompts": len(run.eval_rows),
        "static_acc": s_m["accuracy"], "static_tokens_per_forward": s_m["tokens_per_forward"],
        "dynamic_acc": d_m["accuracy"], "dynamic_tokens_per_forward": d_m["tokens_per_forward"],
        "dynamic_threshold": dynamic.threshold,
    }
    (run.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    decode = lambda ids: run.tokenizer.decode(ids)  # noqa: E731
    sections = {f"static (1 token / pass), accuracy {s_m['accuracy']:.3f}": s_trajs,
                f"dynamic (τ = {dynamic.threshold}), accuracy {d_m['accuracy']:.3f}": d_trajs}
    page = render_html(f"{run.cfg.task.name} · {run.cfg.algo.name} · step {run.step}",
                       {name: [(t, f"{t.prompt_uid}") for t in trajs[:VIEWER_SAMPLES]]
                        for name, trajs in sections.items()}, decode)
    (run.run_dir / "trajectories.html").write_text(page)
    table = Table(title=f"held-out {run.cfg.task.name} accuracy ({len(run.eval_rows)} prompts, greedy)")
    for col in ("", "accuracy", "tokens / forward"):
        table.add_column(col)
    table.add_row("warm start (before RL)", f"{summary['acc_before']:.3f}", "")
    table.add_row(f"after {run.step} steps", f"{summary['acc_after']:.3f}", "")
    table.add_row("  static decoding", f"{s_m['accuracy']:.3f}", f"{s_m['tokens_per_forward']:.2f}")
    table.add_row(f"  dynamic decoding (τ={dynamic.threshold})", f"{d_m['accuracy']:.3f}",
                  f"{d_m['tokens_per_forward']:.2f}")
    Console().print(table)
    log.info("summary: %s", json.dumps(summary))
    return summary


def write_eval(run: Run) -> dict[str, float]:
    """mode=eval: decode the held-out split with the eval sampling params, write eval.json (the
    figures) and eval_samples.jsonl (every response with its verdict), print the figures."""
    cfg, t = run.cfg, run.cfg.trainer
    params = cfg.eval_params()
    m, trajs, scores = decode_eval(run, params, t.eval_samples, progress=t.progress)
    summary = {"model": cfg.model.path, "task": cfg.task.name, "prompts": len(run.eval_rows),
               "samples_per_prompt": t.eval_samples, "strategy": params.strategy,
               "temperature": params.temperature, "threshold": params.threshold,
               "accuracy": m["accuracy"], "pass_at_k": m["pass_at_k"], "response_len": m["response_len"],
               "tokens_per_forward": m["tokens_per_forward"], "tokens_per_s": m["rollout_tokens_per_s"]}
    (run.run_dir / "eval.json").write_text(json.dumps(summary, indent=2))
    with open(run.run_dir / "eval_samples.jsonl", "w") as f:
        for tr in trajs:
            s = scores[(tr.prompt_uid, tr.sample_idx)]
            f.write(json.dumps({"uid": tr.prompt_uid, "sample": tr.sample_idx,
                                "question": run.eval_rows[tr.prompt_uid].get("question"),
                                "response": run.tokenizer.decode(tr.response_ids), "reward": s.reward,
                                "correct": s.correct}) + "\n")
    run.metrics.log(0, {f"eval/{k}": v for k, v in m.items()})
    k = t.eval_samples
    table = Table(title=f"{cfg.task.name}: {len(run.eval_rows)} held-out prompts × {k}, {params.strategy} decoding")
    table.add_column("metric")
    table.add_column("value")
    for name, key in ((f"avg@{k} accuracy", "accuracy"), (f"pass@{k}", "pass_at_k"),
                      ("mean response length", "response_len"), ("tokens / forward", "tokens_per_forward"),
                      ("tokens / s", "tokens_per_s")):
        table.add_row(name, f"{summary[key]:.3f}")
    Console().print(table)
    log.info("eval: %s", json.dumps(summary))
    return summary
