"""Entry point: `python launch.py [hydra overrides]` (or `ray job submit -- python launch.py ...`).

The composed config is validated before Ray starts; then a local Ray is started, or the one at
`ray.address` / RAY_ADDRESS (set inside `ray job submit`) is joined, and actors.driver runs."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from actors.config import ConfigError, RunConfig
from actors.configure import check_files, validate_config

REPO = Path(__file__).resolve().parent


def worker_env() -> dict[str, str]:
    """Env vars actors need (our packages importable), minus what this process already has: inside
    `ray job submit` the job's runtime env is in os.environ, and repeating a key there is an error."""
    wanted = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
              "TOKENIZERS_PARALLELISM": "false"}
    have_repo = str(REPO) in os.environ.get("PYTHONPATH", "").split(os.pathsep)
    return {k: v for k, v in wanted.items() if (not have_repo if k == "PYTHONPATH" else k not in os.environ)}


def connect_ray(cfg: RunConfig) -> None:
    """Join the cluster (its token checked first) or start a local one; then say how to get in."""
    import ray

    from actors.ray_auth import access_help, check_cluster_token

    runtime_env = {"env_vars": worker_env()}
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:  # an existing cluster; inside `ray job submit` RAY_ADDRESS points at it
        check_cluster_token(address)
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
        return
    c = cfg.cluster
    pools = (c.rollout, c.reward, c.learner) + ((c.judge,) if cfg.reward.judged else ())
    needed = sum(p.num_workers * p.cpus_per_worker for p in pools)
    num_cpus = cfg.ray.num_cpus or max(os.cpu_count() or 1, int(needed + 0.999))
    # address="local": a new cluster even where another `ray start` head runs on this machine (a bare
    # ray.init() would join that one instead).
    context = ray.init(address="local", num_cpus=num_cpus, include_dashboard=cfg.ray.include_dashboard,
                       dashboard_host="127.0.0.1", runtime_env=runtime_env)
    if context.dashboard_url:
        print(access_help(context.dashboard_url), flush=True)


def run(cfg: RunConfig) -> None:
    import ray

    from actors.driver import run_to_end
    from actors.ray_auth import ClusterAuthError

    try:
        connect_ray(cfg)
    except ClusterAuthError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    try:
        run_to_end(cfg)
    finally:
        ray.shutdown()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(raw: DictConfig) -> None:
    try:
        cfg = validate_config(OmegaConf.to_container(raw, resolve=True, throw_on_missing=True))
        check_files(cfg)
    except (ConfigError, OmegaConfBaseException) as err:
        print(err, file=sys.stderr)
        sys.exit(2)
    run(cfg)


if __name__ == "__main__":
    main()
