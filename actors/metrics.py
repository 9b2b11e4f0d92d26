"""Where step metrics go: Ray gauges (dashboard / Prometheus), TensorBoard, metrics.jsonl,
optional W&B / MLflow, and a reward/accuracy curve PNG at the end."""
from __future__ import annotations

import importlib.util
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

from ray.util.metrics import Counter, Gauge

log = logging.getLogger(__name__)

# Step metrics mirrored as Ray gauges (name in the step dict -> gauge description).
GAUGES = {
    "reward_mean": "mean reward of the step's responses",
    "accuracy": "fraction of correct responses",
    "response_len": "mean response length (tokens)",
    "tokens_per_forward": "sampler tokens committed per forward pass",
    "rollout_tokens_per_s": "generated tokens per second (rollout stage wall time)",
    "learner_tokens_per_s": "response tokens trained per second (update stage wall time)",
    "sync_s": "weight sync seconds",
    "staleness": "mean policy-version gap between sampling and training",
    "learner/kl": "KL estimate of the update",
    "learner/clip_frac": "fraction of clipped tokens",
    "learner/entropy": "mean entropy of the trained tokens",
    "learner/value_loss": "value model loss (tracerl_value)",
    "eval/accuracy": "held-out accuracy (avg@k)",
    "process/reward_mean": "mean process reward per chunk (reward.process)",
    "judge/failures": "failed judgements (unparseable verdicts, judge or rule errors)",
}


def _metric_name(key: str) -> str:
    return "dllm_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)


class MetricsLogger:
    def __init__(self, run_dir: Path, loggers: list[str], run_name: str, config: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.jsonl = (run_dir / "metrics.jsonl").open("a")
        tags = ("run",)
        self.tags = {"run": run_name}
        self.gauges = {k: Gauge(_metric_name(k), description=d, tag_keys=tags) for k, d in GAUGES.items()}
        self.steps = Counter("dllm_steps", description="RL steps finished", tag_keys=tags)
        self.reissued = Counter("dllm_reissued", description="rollout/reward work re-issued after a fault",
                                tag_keys=tags)
        self.tb = self.wandb = self.mlflow = None
        if "tensorboard" in loggers:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        if "wandb" in loggers and importlib.util.find_spec("wandb"):
            import wandb
            self.wandb = wandb.init(project="dllm-rl", name=run_name, dir=str(run_dir), config=config)
        if "mlflow" in loggers and importlib.util.find_spec("mlflow"):
            import mlflow
            mlflow.start_run(run_name=run_name)
            self.mlflow = mlflow
        for name in set(loggers) - {"tensorboard"}:
            if getattr(self, name) is None:
                log.warning("trainer.logger includes %s but it is not installed; skipping it", name)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        self.jsonl.write(json.dumps({"step": step, **clean}) + "\n")
        self.jsonl.flush()
        for key, value in clean.items():
            if key in self.gauges:
                self.gauges[key].set(value, tags=self.tags)
            if self.tb is not None:
                self.tb.add_scalar(key, value, step)
        if "reissued" in clean and clean["reissued"] > 0:
            self.reissued.inc(clean["reissued"], tags=self.tags)
        if "reward_mean" in clean:  # a training step (eval lines carry eval/ keys only)
            self.steps.inc(1.0, tags=self.tags)
        if self.tb is not None:
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(clean, step=step)
        if self.mlflow is not None:
            self.mlflow.log_metrics(clean, step=step)

    def rewind(self, step: int) -> None:
        """Forget what was logged after `step` (a resumed or recovered run logs those steps again):
        metrics.jsonl drops those lines, TensorBoard purges those events."""
        path = self.run_dir / "metrics.jsonl"
        keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in keep))  # self.jsonl appends: it writes at the new end
        if self.tb is not None:
            from torch.utils.tensorboard import SummaryWriter
            self.tb.close()
            self.tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=step + 1)

    def close(self, plot: bool) -> None:
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
        if self.mlflow is not None:
            self.mlflow.end_run()
        if plot:
            plot_curves(self.run_dir / "metrics.jsonl", self.run_dir / "curves.png")


def read_jsonl(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def plot_curves(jsonl: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_jsonl(jsonl)
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style in (("reward_mean", "-"), ("accuracy", "--"), ("eval/accuracy", "o-")):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts), style, label=key)
    ax.set_xlabel("step")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
