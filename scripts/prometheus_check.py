"""Checks the monitoring path with a real Prometheus (Debian's `prometheus` package): starts it on
monitoring/prometheus.yml against a Ray cluster's service-discovery file, waits until a metric of
the run answers a query over Prometheus's HTTP API, prints one JSON line (the metric's samples and
the scrape targets that are up) and stops it again. Exit status 1 when the metric never shows up.

    python scripts/prometheus_check.py                       # the local Ray under /tmp/ray
    python scripts/prometheus_check.py --sd-file /tmp/ray-x/prom_metrics_service_discovery.json \\
        --metric ray_dllm_sync_s --keep                      # keep Prometheus running (Ctrl-C stops it)
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

CONFIG = Path(__file__).resolve().parents[1] / "monitoring" / "prometheus.yml"


def query(base: str, path: str, **params: str) -> dict:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else base + path
    return json.loads(urllib.request.urlopen(url, timeout=5).read())["data"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sd-file", default="/tmp/ray/prom_metrics_service_discovery.json",
                   help="Ray's service-discovery file (in the head node's temp dir)")
    p.add_argument("--metric", default="ray_dllm_reward_mean")
    p.add_argument("--prometheus", default="prometheus", help="the Prometheus binary")
    p.add_argument("--scrape-interval", default="1s")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds to wait (a run exports its first figures after the warm-up)")
    p.add_argument("--keep", action="store_true", help="leave Prometheus running after the check")
    args = p.parse_args()
    binary = shutil.which(args.prometheus)
    if binary is None:
        sys.exit(f"no Prometheus binary '{args.prometheus}' (Debian/Ubuntu: apt-get install prometheus)")
    if not Path(args.sd_file).is_file():
        sys.exit(f"no service-discovery file {args.sd_file}: is Ray running with that temp dir?")
    work = Path(tempfile.mkdtemp(prefix="prometheus-check-"))
    config = yaml.safe_load(CONFIG.read_text())
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = args.scrape_interval
    config["scrape_configs"][0]["file_sd_configs"][0]["files"] = [str(Path(args.sd_file).resolve())]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (work / "prometheus.log").open("w")
    server = subprocess.Popen([binary, f"--config.file={work / 'prometheus.yml'}",
                               f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline, samples = time.monotonic() + args.timeout, []
        while time.monotonic() < deadline and not samples:
            time.sleep(1.0)
            try:
                samples = query(base, "/api/v1/query", query=args.metric)["result"]
            except OSError:
                continue  # not listening yet
        if not samples:
            print(f"{args.metric} did not appear within {args.timeout:.0f} s; Prometheus log:\n"
                  + (work / "prometheus.log").read_text()[-2000:], file=sys.stderr)
            return 1
        up = [t["scrapeUrl"] for t in query(base, "/api/v1/targets")["activeTargets"] if t["health"] == "up"]
        print(json.dumps({"metric": args.metric, "prometheus": base, "targets_up": up,
                          "samples": [{"labels": s["metric"], "value": float(s["value"][1])} for s in samples]}))
        if args.keep:
            print(f"Prometheus keeps running at {base} (Ctrl-C stops it)", file=sys.stderr)
            server.wait()
        return 0
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
