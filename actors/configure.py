"""The one way a run's config is made (docs/design.md §9): Hydra composes `conf/`, the pydantic tree
validates it (actors/config.py), then the run mode's own rules (actors/modes.py) and the trackers'
packages (actors/trackers.py) — all before Ray starts. `compose_config(overrides)` gives benches and
tests exactly the config `python launch.py *overrides` runs with."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from .config import RunConfig, validate_tree
from .modes import mode_for
from .trackers import check_trackers

CONF = Path(__file__).resolve().parents[1] / "conf"


def validate_config(raw: dict[str, Any]) -> RunConfig:
    cfg = validate_tree(raw)
    mode_for(cfg).check(cfg)
    check_trackers(cfg.trainer.logger)
    return cfg


def compose_config(overrides: list[str]) -> RunConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        raw = compose("config", overrides=overrides)
    return validate_config(OmegaConf.to_container(raw, resolve=True, throw_on_missing=True))
