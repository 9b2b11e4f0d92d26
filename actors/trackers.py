"""The experiment trackers a run can log its step metrics to besides TensorBoard (`trainer.logger`:
wandb, mlflow). Each is checked before Ray starts, and a resumed run continues its tracker runs:
their ids are kept in the run directory (trackers.json)."""
from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any, Protocol

from .config import ConfigError

INSTALL = "pip install -e '.[loggers]'"
IDS_FILE = "trackers.json"


class Tracker(Protocol):
    run_id: str

    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def check_trackers(loggers: list[str]) -> None:
    """A tracker named in trainer.logger must be usable before anything starts."""
    for name in loggers:
        if name in TRACKERS and importlib.util.find_spec(name) is None:
            raise ConfigError(f"trainer.logger includes {name} but the package '{name}' is not installed: "
                              f"{INSTALL} (or remove {name} from trainer.logger)")
    if "mlflow" in loggers and not os.environ.get("MLFLOW_TRACKING_URI"):
        raise ConfigError("trainer.logger includes mlflow but MLFLOW_TRACKING_URI is not set: set it to your "
                          "MLflow server (http://host:5000) or to a local store (file:///path/mlruns, with "
                          "MLFLOW_ALLOW_FILE_STORE=true)")


class WandbTracker:
    """One W&B run (online, or WANDB_MODE=offline for `wandb sync` later); every metric is plotted
    against our own `step`, so warm-up steps (≤ 0) and steps replayed after a resume are kept."""

    def __init__(self, run_dir: Path, run_name: str, config: dict[str, Any], run_id: str | None) -> None:
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "dllm-rl"), name=run_name, dir=str(run_dir),
                              config=config, id=run_id, resume="allow" if run_id else None)
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")
        self.run_id = self.run.id

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log({"step": step, **metrics})

    def close(self) -> None:
        self.run.finish()


class MlflowTracker:
    """One MLflow run at MLFLOW_TRACKING_URI, in the experiment MLFLOW_EXPERIMENT_NAME (default dllm-rl)."""

    def __init__(self, run_dir: Path, run_name: str, config: dict[str, Any], run_id: str | None) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient()
        if run_id is None:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "dllm-rl")
            found = self.client.get_experiment_by_name(name)
            experiment = found.experiment_id if found else self.client.create_experiment(name)
            run_id = self.client.create_run(experiment, run_name=run_name).info.run_id
            self.client.log_dict(run_id, config, "config.json")
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id

    def log(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


TRACKERS: dict[str, type] = {"wandb": WandbTracker, "mlflow": MlflowTracker}


def open_trackers(names: list[str], run_dir: Path, run_name: str, config: dict[str, Any],
                  resuming: bool) -> list[Tracker]:
    """The trackers trainer.logger names; a resumed run continues the runs trackers.json records, a
    fresh one starts new runs and records them."""
    path = run_dir / IDS_FILE
    ids = json.loads(path.read_text()) if resuming and path.is_file() else {}
    trackers = {n: TRACKERS[n](run_dir, run_name, config, ids.get(n)) for n in names if n in TRACKERS}
    if trackers:
        path.write_text(json.dumps({n: t.run_id for n, t in trackers.items()}, indent=2))
    return list(trackers.values())
