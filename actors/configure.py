"""The one way a run's config is made (docs/design.md §9): Hydra composes `conf/`, the pydantic tree
validates it (actors/config.py), then the run mode's own rules (actors/modes.py) and the trackers'
packages (actors/trackers.py) — all before Ray starts. `compose_config(overrides)` gives benches and
tests exactly the config `python launch.py *overrides` runs with; `launch.py` then checks the files
the driver will read (`check_files`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from .checkpoint import resolve_resume
from .config import ConfigError, RunConfig, validate_tree
from .modes import mode_for
from .trackers import check_trackers

CONF = Path(__file__).resolve().parents[1] / "conf"
TASK_FILES = ("path", "eval_path")  # task.params naming data files (or datasets directories) the driver loads


def validate_config(raw: dict[str, Any]) -> RunConfig:
    cfg = validate_tree(raw)
    mode_for(cfg).check(cfg)
    check_trackers(cfg.trainer.logger)
    return cfg


def compose_config(overrides: list[str]) -> RunConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        raw = compose("config", overrides=overrides)
    return validate_config(OmegaConf.to_container(raw, resolve=True, throw_on_missing=True))


def check_files(cfg: RunConfig) -> None:
    """The files the driver reads once Ray has started (actors.start.start_run), checked before: the
    checkpoint at model.path (the driver loads its config.json and tokenizer), the task's data and a
    trainer.resume checkpoint. Not part of validate_config: they are facts about this machine, not the
    config's form (a config may name another machine's paths). What only actors read (judge.model,
    model.ref_path) may live on their nodes alone, so it is not checked here."""
    errors: list[str] = []
    path = cfg.model.path
    if path is not None and not (Path(path) / "config.json").is_file():
        errors.append(f"model.path={path!r} is not a checkpoint directory: {Path(path) / 'config.json'} "
                      "does not exist")
    for key in TASK_FILES:
        value = cfg.task.params.get(key)
        if value is not None and not Path(value).exists():
            errors.append(f"task.params.{key}={value!r} does not exist")
    try:
        resolve_resume(Path(cfg.trainer.run_dir), cfg.trainer.resume)
    except FileNotFoundError as err:
        errors.append(str(err))
    if errors:
        raise ConfigError("invalid config:\n" + "\n".join(f"  {e}" for e in errors))
