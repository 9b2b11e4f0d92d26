"""trainer.logger's W&B and MLflow trackers, for real and without Ray: a run logged through
MetricsLogger, resumed after a rewind, is read back through each tracker's own files and must hold
the same step metrics as metrics.jsonl, in one tracker run; a missing package stops launch.py
before Ray starts, with the install command. Also MetricsLogger's gauge refresher."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from actors.config import ConfigError
from actors.metrics import MetricsLogger, read_jsonl
from actors.trackers import check_trackers
from support import REPO

# Warm-up steps (≤ 0), RL steps with failures by kind, an evaluation line at a step already logged.
FIRST_RUN = [(-1, {"warmup/learner/sft_loss": 3.5}), (0, {"warmup/learner/sft_loss": 2.25}),
             (1, {"reward_mean": 0.25, "sync_s": 0.5, "reward_failed/timeout": 1.0}),
             (2, {"reward_mean": 0.5, "sync_s": 0.25}), (2, {"eval/accuracy": 0.125}),
             (3, {"reward_mean": 0.75, "sync_s": 0.125})]
RESUMED = [(2, {"reward_mean": 0.375, "sync_s": 0.75}), (2, {"eval/accuracy": 0.25}),
           (3, {"reward_mean": 0.625, "sync_s": 1.0}), (4, {"reward_mean": 0.875, "sync_s": 0.0625})]  # from step 1


def log_run(run_dir: Path, logger: str) -> None:
    """A run to step 3, then a resume from the step-1 checkpoint that logs steps 2-4 again."""
    m = MetricsLogger(run_dir, [logger], "dllm-test", {"trainer": {"seed": 0}})
    for step, metrics in FIRST_RUN:
        m.log(step, metrics)
    m.close(plot=False)
    m = MetricsLogger(run_dir, [logger], "dllm-test", {"trainer": {"seed": 0}}, resuming=True)
    m.rewind(1)
    for step, metrics in RESUMED:
        m.log(step, metrics)
    m.close(plot=False)


def last_per_step(rows: list[dict[str, float]]) -> dict[str, dict[int, float]]:
    """{key: {step: the last value logged at that step}}: what a replayed step leaves."""
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for row in rows:
        for key, value in row.items():
            if key != "step":
                out[key][int(row["step"])] = value
    return dict(out)


def test_mlflow_records_the_jsonl_metrics_in_one_run(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the file store is in maintenance mode
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    log_run(run_dir, "mlflow")
    jsonl = last_per_step(read_jsonl(run_dir / "metrics.jsonl"))
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("dllm-rl").experiment_id])
    assert [r.info.run_id for r in runs] == [json.loads((run_dir / "trackers.json").read_text())["mlflow"]]
    run = runs[0]
    assert run.info.status == "FINISHED" and set(run.data.metrics) == set(jsonl)
    for key, by_step in jsonl.items():
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.timestamp)
        assert last_per_step([{"step": m.step, key: m.value} for m in history]) == {key: by_step}
    assert json.loads(Path(client.download_artifacts(run.info.run_id, "config.json", str(tmp_path))).read_text()) \
        == {"trainer": {"seed": 0}}


def test_wandb_offline_records_the_jsonl_metrics_in_one_run(tmp_path, monkeypatch):
    from wandb_records import history, run_ids, wait_complete

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    log_run(run_dir, "wandb")
    # offline-run-<second>-<id>, then its resumption (offline-run-<second>-<id>-1 within the same second)
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"), key=lambda f: f.parent.name)
    assert len(files) == 2  # the first run and its resumption, which `wandb sync` joins into one run
    for f in files:
        wait_complete(f)
    run_id = json.loads((run_dir / "trackers.json").read_text())["wandb"]
    assert set().union(*(run_ids(f) for f in files)) == {run_id}
    logged = [{k: v for k, v in row.items() if not k.startswith("_")} for f in files for row in history(f)]
    assert last_per_step(logged) == last_per_step(read_jsonl(run_dir / "metrics.jsonl"))


def test_a_fresh_start_opens_new_tracker_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    ids = []
    for _ in range(2):
        MetricsLogger(tmp_path, ["wandb"], "dllm-test", {}).close(plot=False)
        ids.append(json.loads((tmp_path / "trackers.json").read_text())["wandb"])
    assert ids[0] != ids[1]


def test_missing_tracker_package_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # importlib.util.find_spec then finds nothing
    with pytest.raises(ConfigError, match=r"includes mlflow but the package 'mlflow' is not installed: "
                                          r"pip install -e '\.\[loggers\]'"):
        check_trackers(["tensorboard", "mlflow"])
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delitem(sys.modules, "mlflow")
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI is not set"):
        check_trackers(["mlflow"])


def test_launch_stops_before_ray_without_the_package(tmp_path):
    hide = ("import runpy, sys; sys.modules['wandb'] = None; sys.argv = ['launch.py', 'trainer.logger=[wandb]', "
            f"'trainer.run_dir={tmp_path}/run']; runpy.run_path('launch.py', run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", hide], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "package 'wandb' is not installed: pip install -e '.[loggers]'" in out.stderr
    assert "Ray dashboard" not in out.stdout and not (tmp_path / "run").exists()


def test_gauges_are_set_again_until_the_logger_closes(tmp_path, monkeypatch):
    """Ray drops a gauge ~20 s after its last set: the logger keeps re-setting the last value."""
    import actors.metrics

    class Recorder:
        def __init__(self) -> None:
            self.values: list[float] = []

        def set(self, value: float, tags: dict[str, str]) -> None:
            self.values.append(value)

    monkeypatch.setattr(actors.metrics, "REFRESH_S", 0.02)
    m = MetricsLogger(tmp_path, [], "dllm-test", {})
    m.gauges["reward_mean"] = gauge = Recorder()
    m.log(1, {"reward_mean": 0.25, "sync_s": 0.5})
    deadline = time.monotonic() + 10
    while len(gauge.values) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    m.close(plot=False)
    time.sleep(0.1)
    count = len(gauge.values)
    time.sleep(0.1)
    assert count >= 4 and set(gauge.values) == {0.25} and len(gauge.values) == count  # none after close
