"""Evaluation on the held-out split: decode and score it on the rollout pool (`decode_eval`, used
by the driver's periodic evaluation and the end-of-run report), and mode=eval's output (`write_eval`)."""
from __future__ import annotations

import json
import logging
import time

from rich.console import Console
from rich.table import Table

from rewards.result import Score
from rollout.params import SamplingParams
from rollout.trajectory_batch import RowMeta

from .payloads import fetch
from .run import Run
from .stages import collect, submit
from .step_data import records_for, rollout_metrics

log = logging.getLogger(__name__)


def decode_eval(run: Run, params: SamplingParams, samples: int = 1, prefix: str = "",
                progress: bool = False) -> tuple[dict[str, float], list[RowMeta], dict[tuple[str, int], Score]]:
    """Decode the held-out prompts (`samples` each) with `params` on the rollout pool and score
    them; metrics, the rows in eval order (their trajectories stay in the object store), and
    their scores."""
    start = time.perf_counter()
    records = records_for(list(run.eval_rows), run.eval_prompts, samples)
    decoded, scores = collect(run.pools, submit(run.pools, records, run.eval_rows, params), run.state.version,
                              run.cfg.trainer.reward_chunk, progress)
    order = {uid: i for i, uid in enumerate(run.eval_rows)}
    decoded.sort(key=lambda m: (order[m.prompt_uid], m.sample_idx))
    m = rollout_metrics(decoded, scores, time.perf_counter() - start, run.state.version, prefix=prefix)
    return m, decoded, scores


def write_eval(run: Run) -> dict[str, float]:
    """mode=eval: decode the held-out split with the eval sampling params, write eval.json (the
    figures) and eval_samples.jsonl (every response with its verdict), print the figures."""
    cfg, trainer = run.cfg, run.cfg.trainer
    params = cfg.eval_params()
    m, decoded, scores = decode_eval(run, params, trainer.eval_samples, progress=trainer.progress)
    summary = {"model": cfg.model.path, "task": cfg.task.name, "prompts": len(run.eval_rows),
               "samples_per_prompt": trainer.eval_samples, "strategy": params.strategy,
               "temperature": params.temperature, "threshold": params.threshold,
               "accuracy": m["accuracy"], "pass_at_k": m["pass_at_k"], "response_len": m["response_len"],
               "tokens_per_forward": m["tokens_per_forward"], "tokens_per_s": m["rollout_tokens_per_s"]}
    (run.run_dir / "eval.json").write_text(json.dumps(summary, indent=2))
    with open(run.run_dir / "eval_samples.jsonl", "w") as f:
        for tr in fetch(decoded):  # the response text is this mode's output
            s = scores[(tr.prompt_uid, tr.sample_idx)]
            f.write(json.dumps({"uid": tr.prompt_uid, "sample": tr.sample_idx,
                                "question": run.eval_rows[tr.prompt_uid].get("question"),
                                "response": run.tokenizer.decode(tr.response_ids), "reward": s.reward,
                                "correct": s.correct}) + "\n")
    run.metrics.log(0, {f"eval/{k}": v for k, v in m.items()})
    k = trainer.eval_samples
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
