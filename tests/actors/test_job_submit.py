"""`ray job submit -- python launch.py ...` against a head node this module starts (own temp dir,
free ports, its own process group, token authentication on with a token of its own) and stops again."""
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
import uuid

import pytest

from learner.distributed import free_ports
from support import REPO

# The CLIs come from this interpreter's environment, not from PATH: the suite must pass when run as
# /path/venv/bin/python -m pytest without the virtualenv activated.
RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]
PORT_FLAGS = ("--port", "--dashboard-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
              "--metrics-export-port", "--runtime-env-agent-port", "--ray-client-server-port",
              "--node-manager-port", "--object-manager-port")


@pytest.fixture(scope="module")
def head_node():
    temp = tempfile.mkdtemp(prefix="ray-js-")
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
    token = os.path.join(temp, "auth_token")  # not ~/.ray/auth_token: other clusters of this user keep theirs
    with open(token, "w") as f:
        f.write(uuid.uuid4().hex)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token}
    args = [*RAY_CLI, "start", "--head", "--num-cpus=8", f"--temp-dir={temp}", "--include-dashboard=true",
            "--dashboard-host=127.0.0.1", "--disable-usage-stats", *(f"{k}={v}" for k, v in ports.items())]
    # A session of its own: every daemon `ray start` spawns shares this process group, so the test
    # stops exactly its own cluster (never `ray stop`, which would hit every cluster of this user).
    starter = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, start_new_session=True)
    pgid = _pgid_of(temp)
    try:
        assert starter.returncode == 0, starter.stderr[-2000:]
        dashboard = f"http://127.0.0.1:{ports['--dashboard-port']}"
        _wait_http(dashboard + "/api/version", headers={"Authorization": "Bearer " + open(token).read()})
        yield dashboard, env, ports
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


def _wait_http(url: str, headers: dict[str, str], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_job_submit_runs_launch(head_node, tmp_path):
    """Also the async path (max_staleness=1: step 2 trains on step-1-policy samples) and the
    Prometheus endpoint carrying the driver's gauges."""
    dashboard, env, ports = head_node
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
    exported = urllib.request.urlopen(f"http://127.0.0.1:{ports['--metrics-export-port']}/metrics",
                                      timeout=10).read().decode()
    assert "dllm_reward_mean" in exported and "dllm_sync_s" in exported


def _without_token(env: dict[str, str], **extra: str) -> dict[str, str]:
    return {**{k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}, **extra}


@pytest.mark.parametrize("client, says", [
    ({}, "Missing authentication token"),  # RAY_AUTH_MODE unset: the CLI sends no token
    ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token"}, "Invalid authentication token"),
])
def test_submit_without_the_token_is_refused(head_node, client, says):
    dashboard, env, _ = head_node
    out = subprocess.run([*RAY_CLI, "job", "submit", f"--address={dashboard}", "--", "true"],
                         env=_without_token(env, **client), capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and says in text, text[-2000:]
    assert "RAY_AUTH_TOKEN_PATH" in text and "ray get-auth-token" in text  # Ray's own message names the fix


@pytest.mark.parametrize("client, says", [
    ({}, "sends no token (RAY_AUTH_MODE is unset). Set RAY_AUTH_MODE=token"),
    ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token"},
     "refused the token from the RAY_AUTH_TOKEN variable: it is not this cluster's token"),
])
def test_launch_names_the_token_fix(head_node, client, says, tmp_path):
    """launch.py joining the cluster without its token stops at once with the fix (ray.init alone
    retries for 20 s and then reports only that it could not connect)."""
    _, env, ports = head_node
    out = subprocess.run([sys.executable, str(REPO / "launch.py"), f"ray.address=127.0.0.1:{ports['--port']}",
                          f"trainer.run_dir={tmp_path}"], env=_without_token(env, **client), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and says in out.stderr, (out.stdout + out.stderr)[-2000:]
    assert not list(tmp_path.iterdir())  # nothing started
