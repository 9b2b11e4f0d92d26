"""Shared by the tests/actors modules: configs composed exactly as launch.py composes them."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from actors.config import RunConfig, validate_config

REPO = Path(__file__).resolve().parents[2]
RUNTIME_ENV = {"env_vars": {"PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}}
# Small enough for 2 cores: a step is a few seconds.
SMALL = ["trainer.prompts_per_step=4", "trainer.responses_per_prompt=4", "rollout.max_new_tokens=16",
         "trainer.eval_every=0", "trainer.eval_prompts=8", "task.train_size=200", "trainer.progress=false",
         "trainer.plot=false", "warmup.steps=0",
         "engine.schedule=constant", "engine.warmup_steps=0"]


def compose_config(overrides: list[str]) -> RunConfig:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        raw = compose("config", overrides=overrides)
    return validate_config(OmegaConf.to_container(raw, resolve=True, throw_on_missing=True))
