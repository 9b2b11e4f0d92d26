"""`ray job submit -- python launch.py ...` against a head node this test starts (own temp dir,
free ports, its own process group) and stops again."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

from learner.distributed import free_ports
from support import REPO

# The CLIs come from this interpreter's environment, not from PATH: the suite must pass when run as
# /path/venv/bin/python -m pytest without the virtualenv activated.
RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]
PORT_FLAGS = ("--port", "--dashboard-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
              "--metrics-export-port", "--runtime-env-agent-port", "--ray-client-server-port",
              "--node-manager-port", "--object-manager-port")


@pytest.fixture
def head_node():
    temp = tempfile.mkdtemp(prefix="ray-js-")
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # a throwaway local head: no token to manage
    args = [*RAY_CLI, "start", "--head", "--num-cpus=8", f"--temp-dir={temp}", "--include-dashboard=true",
            "--dashboard-host=127.0.0.1", "--disable-usage-stats", *(f"{k}={v}" for k, v in ports.items())]
    # A session of its own: every daemon `ray start` spawns shares this process group, so the test
    # stops exactly its own cluster (never `ray stop`, which would hit every cluster of this user).
    starter = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, start_new_session=True)
    pgid = _pgid_of(temp)
    try:
        assert starter.returncode == 0, starter.stderr[-2000:]
        dashboard = f"http://127.0.0.1:{ports['--dashboard-port']}"
        _wait_http(dashboard + "/api/version")
        yield dashboard, env, ports["--metrics-export-port"]
    finally:
        if pgid is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    break
                time.sleep(2)
        shutil.rmtree(temp, ignore_errors=True)


def _pgid_of(temp: str) -> int | None:
    """The process group of the head's daemons (found by our unique temp dir on their command line)."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="ignore")
            except OSError:
                continue
            if temp in cmd:
                return os.getpgid(int(pid))
    return None


def _wait_http(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_job_submit_runs_launch(head_node, tmp_path):
    """Also the async path (max_staleness=1: step 2 trains on step-1-policy samples) and the
    Prometheus endpoint carrying the driver's gauges."""
    dashboard, env, metrics_port = head_node
    run_dir = tmp_path / "run"
    entry = [sys.executable, str(REPO / "launch.py"), f"trainer.run_dir={run_dir}", "trainer.steps=2",
             "trainer.eval_every=0", "async.max_staleness=1", "task.reward=tests.actors.digit_reward:reward",
             "warmup.steps=2", "warmup.prompts_per_step=8", f"warmup.cache_dir={tmp_path}/warm",
             "engine.warmup_steps=0", "trainer.prompts_per_step=4", "trainer.responses_per_prompt=2",
             "rollout.max_new_tokens=8", "trainer.progress=false"]
    runtime_env = json.dumps({"env_vars": {"PYTHONPATH": str(REPO)}})
    out = subprocess.run([*RAY_CLI, "job", "submit", f"--address={dashboard}", f"--runtime-env-json={runtime_env}",
                          "--", *entry], env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "succeeded" in out.stdout.lower()
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [-1, 0, 1, 2]  # two warm-up SFT steps, then RL
    assert [r["staleness"] for r in lines[2:]] == [0.0, 1.0]
    assert (run_dir / "checkpoints" / "step_2" / "driver.json").is_file()
    assert list(run_dir.glob("tensorboard/events.out.tfevents.*"))
    exported = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    assert "dllm_reward_mean" in exported and "dllm_sync_s" in exported
