"""Where step metrics go: Ray metrics (dashboard / Prometheus; the Grafana dashboard
monitoring/grafana/dllm_rl.json plots them), TensorBoard, metrics.jsonl, the W&B / MLflow trackers
(actors/trackers.py), and a reward/accuracy curve PNG at the end."""
from __future__ import annotations

import json
import logging
import math
import re
import threading
from pathlib import Path
from typing import Any

from ray.util.metrics import Counter, Gauge

from .trackers import open_trackers

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"  # run_dir/metrics.jsonl: one JSON line per logged step

# Step metrics mirrored as Ray gauges (name in the step dict -> gauge description); Ray exports
# each as ray_dllm_<name> with "/" as "_" (pool/rollout/size -> ray_dllm_pool_rollout_size).
GAUGES = {
    "reward_mean": "mean reward of the step's responses",
    "accuracy": "fraction of correct responses",
    "response_len": "mean response length (tokens)",
    "tokens_per_forward": "sampler tokens committed per forward pass",
    "rollout_tokens_per_s": "generated tokens per second (rollout stage wall time)",
    "learner_tokens_per_s": "response tokens trained per second (update stage wall time)",
    "rollout_s": "rollout stage seconds (decoding and rewards)",
    "update_s": "learner update seconds",
    "sync_s": "weight sync seconds",
    "staleness": "mean policy-version gap between sampling and training",
    "reward_failed": "samples of the step without a verdict",
    "learner/kl": "KL estimate of the update",
    "learner/clip_frac": "fraction of clipped tokens",
    "learner/entropy": "mean entropy of the trained tokens",
    "learner/value_loss": "value model loss (tracerl_value)",
    "eval/accuracy": "held-out accuracy (avg@k)",
    "process/reward_mean": "mean process reward per chunk (reward.process)",
    "judge/failures": "failed judgements (unparseable verdicts, judge or rule errors)",
    **{f"pool/{pool}/{what}": f"{pool} workers {'alive' if what == 'size' else 'configured'}"
       for pool in ("rollout", "reward", "judge") for what in ("size", "target")},
    "pool/restarts": "workers started in place of lost ones so far",
    "cluster/draining_nodes": "nodes draining now (a preemption warning)",
    "cluster/preemptions": "nodes announced draining so far",
    "cluster/nodes_lost": "nodes that died so far",
    "cluster/steps_lost": "training steps replayed after learner ranks were lost with a node",
    "cluster/batches_regenerated": "trajectory batches decoded again after their node was lost or drained",
}
FAILED_KIND = "reward_failed/"  # step keys reward_failed/<kind>: the failures counter's `kind` tag
# Ray exports a gauge only in the export interval after it was set and drops it from the endpoint
# ~20 s later, so a step longer than that would leave holes in every panel: the logger sets each
# gauge's last value again this often, for as long as the run lives.
REFRESH_S = 5.0


def _metric_name(key: str) -> str:
    return "dllm_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)


class MetricsLogger:
    def __init__(self, run_dir: Path, loggers: list[str], run_name: str, config: dict[str, Any],
                 resuming: bool = False) -> None:
        self.run_dir = run_dir
        self.jsonl = (run_dir / METRICS).open("a")
        tags = ("run",)
        self.tags = {"run": run_name}
        self.gauges = {k: Gauge(_metric_name(k), description=d, tag_keys=tags) for k, d in GAUGES.items()}
        self.steps = Counter("dllm_steps", description="RL steps finished", tag_keys=tags)
        self.reissued = Counter("dllm_reissued", description="rollout/reward work re-issued after a fault",
                                tag_keys=tags)
        self.sync_bytes = Counter("dllm_sync_bytes", description="weight bytes delivered to rollout workers",
                                  tag_keys=tags)
        self.failures = Counter("dllm_reward_failures", description="samples without a verdict, by kind",
                                tag_keys=("run", "kind"))
        self.last: dict[str, float] = {}  # each gauge's last value, set again by the refresher
        self.stopped = threading.Event()
        threading.Thread(target=self._refresh, name="gauge-refresh", daemon=True).start()
        self.tb = None
        if "tensorboard" in loggers:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        self.trackers = open_trackers(loggers, run_dir, run_name, config, resuming)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        self.jsonl.write(json.dumps({"step": step, **clean}) + "\n")
        self.jsonl.flush()
        for key, value in clean.items():
            if key in self.gauges:
                self.gauges[key].set(value, tags=self.tags)
                self.last[key] = value
            if key.startswith(FAILED_KIND) and value > 0:
                self.failures.inc(value, tags={**self.tags, "kind": key[len(FAILED_KIND):]})
            if self.tb is not None:
                self.tb.add_scalar(key, value, step)
        if clean.get("reissued", 0) > 0:
            self.reissued.inc(clean["reissued"], tags=self.tags)
        if clean.get("sync_bytes", 0) > 0:
            self.sync_bytes.inc(clean["sync_bytes"], tags=self.tags)
        if "reward_mean" in clean:  # a training step (eval lines carry eval/ keys only)
            self.steps.inc(1.0, tags=self.tags)
        if self.tb is not None:
            self.tb.flush()
        for tracker in self.trackers:
            tracker.log(step, clean)

    def _refresh(self) -> None:
        while not self.stopped.wait(REFRESH_S):
            for key, value in list(self.last.items()):
                self.gauges[key].set(value, tags=self.tags)

    def rewind(self, step: int) -> None:
        """Forget what was logged after `step` (a resumed or recovered run logs those steps again):
        metrics.jsonl drops those lines, TensorBoard purges those events."""
        path = self.run_dir / METRICS
        keep = [line for logged, line in logged_lines(path) if logged <= step]
        path.write_text("".join(line + "\n" for line in keep))  # self.jsonl appends: it writes at the new end
        if self.tb is not None:
            from torch.utils.tensorboard import SummaryWriter
            self.tb.close()
            self.tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=step + 1)

    def close(self, plot: bool) -> None:
        self.stopped.set()
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
        for tracker in self.trackers:
            tracker.close()
        if plot:
            plot_curves(self.run_dir / METRICS, self.run_dir / "curves.png")


def logged_lines(path: Path) -> list[tuple[int, str]]:
    """(step, line without its newline) of each line of a metrics.jsonl. A last line that is cut off (the
    run died writing it) is dropped with a warning, so the crash it records does not also stop the
    resume; a malformed line elsewhere is an error naming it."""
    lines = [line for line in path.read_text().splitlines(keepends=True) if line.strip()]
    out = []
    for i, line in enumerate(lines, start=1):
        try:
            out.append((int(json.loads(line)["step"]), line.rstrip("\n")))
        except (ValueError, KeyError, TypeError) as err:
            if i == len(lines) and not line.endswith("\n"):
                log.warning("%s: dropping its last line, cut off mid-write (%s)", path, err)
                break
            raise ValueError(f"{path}:{i}: not a metrics line ({err})") from err
    return out


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
