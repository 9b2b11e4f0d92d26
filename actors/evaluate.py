"""Evaluation on the held-out split: the driver's periodic evaluation (`evaluate`), the figures of
held-out decoding with any sampling params (`eval_figures`, also the end-of-run report's), and
mode=eval's output (`write_eval`), and the trajectory viewer page both write (`write_viewer`)."""
from __future__ import annotations

import json
import logging
import time

from rich.console import Console
from rich.table import Table

from rewards.result import Score
from rollout.params import SamplingParams
from rollout.trajectory import Trajectory
from rollout.trajectory_batch import RowMeta
from rollout.viewer import render_html
from tasks.images import data_uri, load_image

from .payloads import fetch
from .reward_route import check_reward_failures
from .run import Run
from .step_metrics import rollout_metrics
from .timer import StepTimer

log = logging.getLogger(__name__)
VIEWER_ROWS = 24  # responses mode=eval shows in trajectories.html


def write_viewer(run: Run, title: str, sections: dict[str, list[tuple[Trajectory, str]]]) -> None:
    """trajectories.html: each response coloured by commit step, its prompt's image as a thumbnail."""
    vocab = len(run.tokenizer)  # ids from here on are image placeholders (models/vision.py): the thumbnail shows them
    page = render_html(title, sections, lambda ids: run.tokenizer.decode([i for i in ids if i < vocab]),
                       lambda ref: data_uri(load_image(ref), 96))
    (run.run_dir / "trajectories.html").write_text(page)


def eval_figures(run: Run, params: SamplingParams, samples: int = 1, prefix: str = "", progress: bool = False,
                 ) -> tuple[dict[str, float], list[RowMeta], dict[tuple[str, int], Score]]:
    """Decode the held-out prompts (`samples` each) with `params` on the rollout group and score
    them; metrics, the rows in held-out order (their trajectories stay in the object store), and
    their scores."""
    start = time.perf_counter()
    rows, scores = run.rollout.decode_eval(params, samples, progress)
    version = run.learner.version if run.learner else 0
    return rollout_metrics(rows, scores, time.perf_counter() - start, version, prefix=prefix), rows, scores


def evaluate(run: Run) -> dict[str, float]:
    """avg@k on the held-out rows with the eval sampling params (greedy by default)."""
    trainer = run.cfg.trainer
    run.learner.publish(StepTimer())
    m, rows, scores = eval_figures(run, run.cfg.eval_params(), trainer.eval_samples, "eval/", trainer.progress)
    check_reward_failures(scores.values(), run.cfg.reward.max_failed_fraction, f"evaluation at step {run.state.step}")
    run.metrics.log(run.state.step, m)
    log.info("eval at step %d: accuracy %.3f over %d samples", run.state.step, m["eval/accuracy"], len(rows))
    return m


def write_eval(run: Run) -> dict[str, float]:
    """mode=eval: decode the held-out split with the eval sampling params, write eval.json (the
    figures) and eval_samples.jsonl (every response with its verdict), print the figures."""
    cfg, trainer = run.cfg, run.cfg.trainer
    params = cfg.eval_params()
    m, decoded, scores = eval_figures(run, params, trainer.eval_samples, progress=trainer.progress)
    eval_rows = run.rollout.eval_rows
    summary = {"model": cfg.model.path, "task": cfg.task.name, "prompts": len(eval_rows),
               "samples_per_prompt": trainer.eval_samples, "strategy": params.strategy,
               "temperature": params.temperature, "threshold": params.threshold,
               "accuracy": m["accuracy"], "pass_at_k": m["pass_at_k"], "response_len": m["response_len"],
               "tokens_per_forward": m["tokens_per_forward"], "tokens_per_s": m["rollout_tokens_per_s"]}
    (run.run_dir / "eval.json").write_text(json.dumps(summary, indent=2))
    trajs = fetch(decoded)
    with open(run.run_dir / "eval_samples.jsonl", "w") as f:
        for tr in trajs:  # the response text is this mode's output
            s = scores[(tr.prompt_uid, tr.sample_idx)]
            f.write(json.dumps({"uid": tr.prompt_uid, "sample": tr.sample_idx,
                                "question": eval_rows[tr.prompt_uid].get("question"),
                                **({"image": tr.image} if tr.image else {}),
                                "response": run.tokenizer.decode(tr.response_ids), "reward": s.reward,
                                "correct": s.correct}) + "\n")
    verdict = {True: "correct", False: "wrong"}
    write_viewer(run, f"{cfg.task.name} · mode=eval", {f"{params.strategy} decoding": [
        (t, f"{t.prompt_uid} · {verdict[scores[(t.prompt_uid, t.sample_idx)].correct]}") for t in trajs[:VIEWER_ROWS]]})
    run.metrics.log(0, {f"eval/{k}": v for k, v in m.items()})
    k = trainer.eval_samples
    table = Table(title=f"{cfg.task.name}: {len(eval_rows)} held-out prompts × {k}, {params.strategy} decoding")
    table.add_column("metric")
    table.add_column("value")
    for name, key in ((f"avg@{k} accuracy", "accuracy"), (f"pass@{k}", "pass_at_k"),
                      ("mean response length", "response_len"), ("tokens / forward", "tokens_per_forward"),
                      ("tokens / s", "tokens_per_s")):
        table.add_row(name, f"{summary[key]:.3f}")
    Console().print(table)
    log.info("eval: %s", json.dumps(summary))
    return summary
