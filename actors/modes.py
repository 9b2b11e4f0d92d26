"""The ways to drive a run (`mode`: rl, sft, eval), each an object chosen once (`mode_for`) that
decides what differs between them: which algorithms fit, whether there are learners, training
rows and prompt streams, the SFT warm start, and what the run does (docs/design.md §8.2). The only
module that reads `mode`."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from learner.algo_config import SFT_KNOBS
from learner.objectives import OBJECTIVES, Objective
from models.checkpoint import weights_fingerprint
from tasks.prompt_stream import PromptStream
from tasks.registry import Task
from tasks.schemas import Row

from .config import ConfigError, RunConfig
from .evaluate import write_eval
from .loop import train
from .run import Run
from .steps import rl_step, sft_step

Streams = tuple[PromptStream | None, PromptStream | None]  # (training prompts, supervised steps' rows)


class Mode:
    learners = True  # a learner group exists

    def fits(self, objective: Objective) -> bool:
        """Whether this mode's learners can train `objective`."""
        raise NotImplementedError

    def check(self, cfg: RunConfig) -> None:
        """This mode's config rules, checked with the rest of the config (ConfigError names the key)."""
        if self.learners and not self.fits(cfg.algo.objective):
            fitting = tuple(name for name, o in OBJECTIVES.items() if self.fits(o))
            raise ConfigError(f"invalid config:\n  algo.name={cfg.algo.name!r} does not fit mode={cfg.mode!r}, "
                              f"which needs one of {fitting}")

    def evaluates(self, cfg: RunConfig) -> bool:
        """Whether the run decodes the held-out split (so its prompts are screened up front)."""
        return cfg.trainer.eval_every > 0

    def train_rows(self, task: Task, cfg: RunConfig) -> list[Row]:
        return task.train_rows(cfg.task.train_size, cfg.task.split_seed)

    def warm_dir(self, cfg: RunConfig, start: str) -> Path | None:
        """Where the run's SFT warm start from the weights at `start` is (or will be) cached; None: it has none."""
        return None

    def streams(self, cfg: RunConfig, train: list[Row], warm_up: bool) -> Streams:
        raise NotImplementedError

    def run(self, run: Run) -> None:
        raise NotImplementedError


class RL(Mode):
    """RL with `algo` (after the SFT warm start, when warmup.steps > 0 and none is cached)."""

    def fits(self, objective: Objective) -> bool:
        return objective.supervised_on != "references"  # advantages, or SFT on the step's rollouts

    def check(self, cfg: RunConfig) -> None:
        super().check(cfg)
        algo, n = cfg.algo, cfg.trainer.responses_per_prompt
        # A group of one has group advantage 0: with drop_zero_advantage every group is dropped, and without
        # it only a value model learning raw rewards (value.outcome=reward) gives its tokens an advantage.
        raw_rewards = algo.uses_value and algo.value.outcome == "reward"
        if algo.objective.supervised_on is None and n < 2 and (algo.advantage.drop_zero_advantage or not raw_rewards):
            raise ConfigError(f"invalid config:\n  trainer.responses_per_prompt={n}: algo.name={algo.name!r} "
                              "compares the responses to one prompt (group advantages), which needs at least 2 "
                              "(or algo=tracerl_value with algo.value.outcome=reward "
                              "algo.advantage.drop_zero_advantage=false)")

    def warm_dir(self, cfg: RunConfig, start: str) -> Path | None:
        """The cache entry for this run's warm start: a hash of everything that produces it (the starting
        weights themselves, not only their config; of the warm-up's algo, only the knobs SFT reads)."""
        if not cfg.warmup.steps:
            return None
        key = json.dumps(
            {
                "model": cfg.model.model_dump(mode="json"),
                "weights": weights_fingerprint(start),
                "task": cfg.task.model_dump(mode="json"),
                "warmup": cfg.warmup.model_dump(mode="json", exclude={"cache_dir", "algo"})
                | {"algo": cfg.warmup.algo.model_dump(mode="json", include=set(SFT_KNOBS))},
                "engine": cfg.engine.model_dump(
                    mode="json", exclude={"lr", "schedule", "warmup_steps", "total_steps", "min_lr_ratio"}
                ),
                "seed": cfg.trainer.seed,
            },
            sort_keys=True,
        )
        return Path(cfg.warmup.cache_dir) / hashlib.sha1(key.encode()).hexdigest()[:12]

    def streams(self, cfg: RunConfig, train: list[Row], warm_up: bool) -> Streams:
        prompts = PromptStream(train, seed=cfg.trainer.seed)
        # The warm-up learns from the first warmup.train_size training rows (train_rows(n) is a prefix
        # of train_rows(m > n)).
        return prompts, PromptStream(train[: cfg.warmup.train_size], seed=cfg.trainer.seed) if warm_up else None

    def run(self, run: Run) -> None:
        train(run, rl_step)


class SFT(Mode):
    """Supervised training on the task's reference solutions."""

    def fits(self, objective: Objective) -> bool:
        return objective.supervised_on == "references"

    def streams(self, cfg: RunConfig, train: list[Row], warm_up: bool) -> Streams:
        prompts = PromptStream(train, seed=cfg.trainer.seed)
        return prompts, prompts

    def run(self, run: Run) -> None:
        train(run, sft_step)


class Eval(Mode):
    """Decode and score the held-out split with model.path; no learners."""
    learners = False

    def check(self, cfg: RunConfig) -> None:
        if cfg.model.path is None:
            raise ConfigError("invalid config:\n  model.path: mode=eval decodes a checkpoint, set "
                              "model.path=/dir/of/the/checkpoint")

    def evaluates(self, cfg: RunConfig) -> bool:
        return True

    def train_rows(self, task: Task, cfg: RunConfig) -> list[Row]:
        return []  # an evaluation-only file may have none (eval_fraction=1)

    def streams(self, cfg: RunConfig, train: list[Row], warm_up: bool) -> Streams:
        return None, None

    def run(self, run: Run) -> None:
        write_eval(run)


MODES: dict[str, Mode] = {"rl": RL(), "sft": SFT(), "eval": Eval()}


def mode_for(cfg: RunConfig) -> Mode:
    return MODES[cfg.mode]
