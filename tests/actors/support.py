"""Shared by the tests/actors modules: configs composed exactly as launch.py composes them."""
from __future__ import annotations

from pathlib import Path

from actors.configure import compose_config  # noqa: F401  (re-exported for the tests)

REPO = Path(__file__).resolve().parents[2]
RUNTIME_ENV = {"env_vars": {"PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}}
# Small enough for 2 cores: a step is a few seconds.
SMALL = ["trainer.prompts_per_step=4", "trainer.responses_per_prompt=4", "rollout.max_new_tokens=16",
         "trainer.eval_every=0", "trainer.eval_prompts=8", "task.train_size=200", "trainer.progress=false",
         "trainer.plot=false", "warmup.steps=0",
         "engine.schedule=constant", "engine.warmup_steps=0",
         "++algo.advantage.refill_rounds=0"]  # a random model's groups are all wrong: no decoding them 4 times
