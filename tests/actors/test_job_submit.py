"""`ray job submit -- python launch.py ...` against a head node this module starts (own temp dir,
free ports, its own process group, token authentication on with a token of its own) and stops again."""
from __future__ import annotations

import json
import math
import os
import re
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
        yield dashboard, env, ports, temp
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


GRAFANA = REPO / "monitoring" / "grafana" / "dllm_rl.json"
FRACTIONS = {"ray_dllm_reward_mean", "ray_dllm_accuracy", "ray_dllm_eval_accuracy", "ray_dllm_staleness"}
ZERO_OK = {"ray_dllm_sync_s", "ray_dllm_reward_failed", "ray_dllm_pool_restarts", "ray_dllm_staleness",
           "ray_dllm_accuracy", "ray_dllm_eval_accuracy"} | {f"ray_dllm_pool_judge_{k}" for k in ("size", "target")} \
    | {f"ray_dllm_cluster_{k}" for k in ("draining_nodes", "preemptions", "nodes_lost", "steps_lost",
                                         "batches_regenerated")}  # a fault-free run on one node


@pytest.fixture(scope="module")
def job(head_node, tmp_path_factory):
    """One short job through `ray job submit` (async, an evaluation, a reward that fails for some
    responses); while it runs, Ray's metrics endpoint is scraped every second and, where the binary
    is installed, a real Prometheus watches the cluster (scripts/prometheus_check.py)."""
    dashboard, env, ports, temp = head_node
    tmp = tmp_path_factory.mktemp("job")
    run_dir = tmp / "run"
    entry = [sys.executable, str(REPO / "launch.py"), f"trainer.run_dir={run_dir}", "trainer.steps=3",
             "trainer.eval_every=3", "trainer.eval_prompts=8", "async.max_staleness=1",
             "algo.advantage.refill_rounds=0",  # dynamic sampling is lockstep only
             "task.reward=tests.actors.digit_reward:reward_or_error", "reward.max_failed_fraction=0.5",
             "warmup.steps=2", "warmup.prompts_per_step=8", f"warmup.cache_dir={tmp}/warm",
             "engine.warmup_steps=0", "trainer.prompts_per_step=4", "trainer.responses_per_prompt=2",
             "rollout.max_new_tokens=8", "trainer.progress=false"]
    runtime_env = json.dumps({"env_vars": {"PYTHONPATH": str(REPO)}})
    prometheus = None
    if shutil.which("prometheus"):
        prometheus = subprocess.Popen([sys.executable, str(REPO / "scripts" / "prometheus_check.py"), "--sd-file",
                                       os.path.join(temp, "prom_metrics_service_discovery.json"), "--timeout", "300"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    submit = subprocess.Popen([*RAY_CLI, "job", "submit", f"--address={dashboard}",
                               f"--runtime-env-json={runtime_env}", "--", *entry],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    scraped: dict[str, list[tuple[dict[str, str], float]]] = {}
    actors = None
    while submit.poll() is None:  # gauges of a finished driver age out of the endpoint: read them live
        _scrape(f"http://127.0.0.1:{ports['--metrics-export-port']}/metrics", scraped)
        if actors is None and "ray_dllm_reward_mean" in scraped:  # RL steps run: every pool is up
            listed = subprocess.run([*RAY_CLI, "list", "actors", f"--address={dashboard}", "--format=json"],
                                    env=env, capture_output=True, text=True, timeout=60)
            actors = (sorted(a["name"] for a in json.loads(listed.stdout) if not a["name"].startswith("_ray"))
                      if listed.returncode == 0 else listed.stderr)  # (the job's supervisor actor left out)
        time.sleep(1.0)
    deadline = time.monotonic() + 15  # figures of the last seconds reach the endpoint up to ~10 s later
    while not dashboard_metrics() <= set(scraped) and time.monotonic() < deadline:
        _scrape(f"http://127.0.0.1:{ports['--metrics-export-port']}/metrics", scraped)
        time.sleep(1.0)
    output = submit.stdout.read()
    checked = None
    if prometheus:
        try:  # the run's gauges stay on the endpoint for ~20 s after the driver ends
            checked = prometheus.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            prometheus.terminate()
            checked = prometheus.communicate()
    return {"rc": submit.returncode, "output": output, "run_dir": run_dir, "scraped": scraped, "actors": actors,
            "prometheus": (prometheus.returncode, *checked) if prometheus else None}


def dashboard_metrics() -> set[str]:
    """Every ray_dllm_* name the Grafana dashboard's queries use."""
    exprs = [t["expr"] for p in json.loads(GRAFANA.read_text())["panels"] for t in p["targets"]]
    return {name for e in exprs for name in re.findall(r"\bray_dllm_\w+", e)}


def _scrape(url: str, into: dict[str, list[tuple[dict[str, str], float]]]) -> None:
    """Every ray_dllm_* sample of one scrape, parsed as Prometheus parses the text format."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("ray_dllm_"):
                into.setdefault(sample.name, []).append((sample.labels, sample.value))


def test_job_submit_runs_launch(job):
    """Also the async path: steps 2 and 3 train on samples of the policy one version older."""
    assert job["rc"] == 0 and "succeeded" in job["output"].lower(), job["output"][-3000:]
    run_dir = job["run_dir"]
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if any(k.startswith("warmup/") for k in r)] == [-1, 0]  # warm-up SFT
    steps = [r for r in lines if "reward_mean" in r]
    assert [r["step"] for r in steps] == [1, 2, 3] and [r["staleness"] for r in steps] == [0.0, 1.0, 1.0]
    assert steps[1]["sync_bytes"] > 0  # step 3's rollout was submitted with the step-1 policy
    assert any(r.get("reward_failed/reward_error", 0) > 0 for r in steps)  # what the failure panel shows
    assert (run_dir / "checkpoints" / "step_3" / "driver.json").is_file()
    # `ray list actors` with RAY_AUTH_MODE=token and the token, as the README says, names the pools.
    assert job["actors"] == ["learner-0", "reward-0", "rollout-0", "rollout-1"]
    assert list(run_dir.glob("tensorboard/events.out.tfevents.*"))


def test_every_grafana_metric_is_exported_with_a_plausible_value(job):
    """The dashboard's PromQL names (read from the JSON, so the two cannot drift) against what Ray's
    endpoint served during the run."""
    used = dashboard_metrics()
    assert len(used) >= 20 and not used - set(job["scraped"]), sorted(used - set(job["scraped"]))
    for name in used:
        values = [v for _, v in job["scraped"][name]]
        assert all(math.isfinite(v) and v >= 0 for v in values), (name, values)
        assert name in ZERO_OK or max(values) > 0, (name, values)
        assert name not in FRACTIONS or max(values) <= 1, (name, values)
    for pool in ("rollout", "reward"):  # alive = configured (2 rollout workers, 1 reward worker)
        assert {v for _, v in job["scraped"][f"ray_dllm_pool_{pool}_size"]} == \
            {v for _, v in job["scraped"][f"ray_dllm_pool_{pool}_target"]} == {2.0 if pool == "rollout" else 1.0}
    kinds = {labels["kind"] for labels, _ in job["scraped"]["ray_dllm_reward_failures_total"]}
    assert kinds == {"reward_error"}


def test_a_real_prometheus_scrapes_the_run(job):
    """scripts/prometheus_check.py: Debian's Prometheus on monitoring/prometheus.yml, fed Ray's
    service-discovery file, answers a query for the run's reward over its HTTP API."""
    if job["prometheus"] is None:
        pytest.skip("no prometheus binary (apt-get install prometheus)")
    rc, out, err = job["prometheus"]
    assert rc == 0, err[-3000:]
    found = json.loads(out)
    assert found["metric"] == "ray_dllm_reward_mean" and found["targets_up"]
    assert all(0 <= s["value"] <= 1 and s["labels"]["run"].startswith("dllm-run-") for s in found["samples"])


def _without_token(env: dict[str, str], **extra: str) -> dict[str, str]:
    return {**{k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}, **extra}


@pytest.mark.parametrize("client, says", [
    ({}, "Missing authentication token"),  # RAY_AUTH_MODE unset: the CLI sends no token
    ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token"}, "Invalid authentication token"),
])
def test_submit_without_the_token_is_refused(head_node, client, says):
    dashboard, env, _, _ = head_node
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
    _, env, ports, _ = head_node
    out = subprocess.run([sys.executable, str(REPO / "launch.py"), f"ray.address=127.0.0.1:{ports['--port']}",
                          f"trainer.run_dir={tmp_path}"], env=_without_token(env, **client), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and says in out.stderr, (out.stdout + out.stderr)[-2000:]
    assert not list(tmp_path.iterdir())  # nothing started
