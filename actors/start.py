"""Everything a run needs before its first step (docs/design.md §8.2): the run directory, the model
and the task, every prompt screened, the two groups of actors, the metrics logger, and a resume."""
from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any, Callable

from models.checkpoint import load_config
from models.tiny import write_tiny_checkpoint
from models.tokenizer import load_tokenizer
from models.vision import image_placeholders
from tasks.images import load_image
from tasks.prompts import encode_prompt
from tasks.registry import Task, get_task, resolve_reward
from tasks.schemas import Row
from tasks.screen import PromptLimits, ScreenedRows, screen_prompts

from .checkpoint import resolve_resume, set_aside_abandoned
from .cluster_watch import ClusterWatch
from .config import RunConfig
from .hooks import RunHooks
from .learner_group import LearnerGroup
from .metrics import MetricsLogger
from .modes import Mode, mode_for
from .placement import reserve
from .rollout_group import RolloutGroup
from .run import LoopState, Run
from .weights_source import Checkpoint

log = logging.getLogger(__name__)


def start_run(cfg: RunConfig, hooks: RunHooks | None = None) -> Run:
    mode, run_dir, hooks = mode_for(cfg), prepare_run_dir(cfg), hooks or RunHooks()
    task = get_task(cfg.task.name, **cfg.task.params)
    reward = cfg.task.reward or task.reward_path
    resolve_reward(reward)  # a bad name fails here, not in every reward worker
    start = model_path(cfg, run_dir)
    warm_dir, resume = mode.warm_dir(cfg, start), resolve_resume(run_dir, cfg.trainer.resume)
    path, needs_warmup = starting_weights(start, warm_dir, resume)
    tokenizer, namespace = load_tokenizer(path), namespace_for(cfg, run_dir)
    encode = prompt_encoder(cfg, task, tokenizer, path)
    train, evals = screen_run_rows(cfg, mode, task, path, encode)  # every prompt the run uses, checked now
    prompts, supervised = mode.streams(cfg, train.rows, needs_warmup)
    places = reserve(cfg, namespace, mode.learners, judges=bool(cfg.reward.judged) and mode.learners)
    learner = LearnerGroup(cfg, namespace, places.learner, path, needs_warmup, hooks) if mode.learners else None
    rollout = RolloutGroup.start(cfg, path, reward, namespace, places, learner or Checkpoint(), encode, prompts,
                                 evals, hooks, ClusterWatch().poll())
    if learner is not None:
        learner.connect(rollout)
    metrics = MetricsLogger(run_dir, cfg.trainer.logger, namespace, cfg.model_dump(mode="json", by_alias=True),
                            resuming=resume is not None)
    run = Run(cfg, run_dir, task, tokenizer, metrics, rollout, learner, places, prompts, supervised, warm_dir,
              hooks, LoopState(needs_warmup=needs_warmup))
    begin(run, resume, skipped=len(task.skipped_rows) + len(train.skipped) + len(evals.skipped))
    return run


def starting_weights(path: str, warm_dir: Path | None, resume: Path | None) -> tuple[str, bool]:
    """What the actors load (the cached warm start when there is one, else `path`) and whether the
    learners start with the warm-up (no cache yet, and not resuming)."""
    if warm_dir is not None and (warm_dir / "config.json").is_file():
        log.info("using the cached warm start %s", warm_dir)
        return str(warm_dir), False
    return path, warm_dir is not None and resume is None


def begin(run: Run, resume: Path | None, skipped: int) -> None:
    """A fresh start counts the rows it skipped; a resume loads the checkpoint (the rollout workers
    hold the base weights until the first step syncs them)."""
    if resume is None:
        if skipped:
            run.metrics.log(0, {"data/skipped_rows": float(skipped)})
        return
    run.restore(run.learner.resume(resume))
    log.info("resumed from %s at step %d", resume, run.state.step)


def prepare_run_dir(cfg: RunConfig) -> Path:
    """trainer.run_dir with the run's config in it, and whatever history there this start abandons
    (a fresh start: all of it; a resume from an earlier step: what came after) set aside under
    abandoned/<n>/ (actors.checkpoint.set_aside_abandoned), so one run's history is never mixed
    into another's."""
    run_dir = Path(cfg.trainer.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if mode_for(cfg).learners:  # mode=eval (resume=never) writes no checkpoint: it abandons no history
        set_aside_abandoned(run_dir, cfg.trainer.resume)
    (run_dir / "config.json").write_text(json.dumps(cfg.model_dump(mode="json", by_alias=True), indent=2))
    return run_dir


def model_path(cfg: RunConfig, run_dir: Path) -> str:
    if cfg.model.path is not None:
        return cfg.model.path
    path = run_dir / "tiny_model"
    if not (path / "config.json").is_file():
        write_tiny_checkpoint(path, seed=cfg.model.init_seed, family=cfg.model.family)
    return str(path)


def prompt_encoder(cfg: RunConfig, task: Task, tokenizer: Any, path: str) -> Callable[[Row], list[int]]:
    """Row -> prompt ids: the task's template, a row's image as the model's image placeholders (as many as
    that image gives: anyres views open it to read its size). An image row for a text-only model is refused
    naming both config keys (when the rows are screened, at start)."""
    model_cfg = load_config(path, family=cfg.model.family, overrides=cfg.model.overrides())
    template = cfg.task.template or task.template

    def encode(row: Row) -> list[int]:
        if row.get("image") and not model_cfg.image_tokens:
            raise ValueError(f"task.name={cfg.task.name!r} gives image prompts, but model.name={cfg.model.name!r} "
                             f"(model.family={cfg.model.family}) takes no images: use a vision-language model "
                             "(model=llada_v, or model=tiny_llada_v for the tiny random one)")
        image = load_image(row["image"]) if row.get("image") and model_cfg.max_tiles else None
        image_ids = image_placeholders(model_cfg, image) if row.get("image") else []
        return encode_prompt(row, tokenizer, template, task.kind, image_ids)

    return encode


def namespace_for(cfg: RunConfig, run_dir: Path) -> str:
    """A per-run Ray namespace: actor names repeat across runs, namespaces keep them apart."""
    if cfg.ray.namespace:
        return cfg.ray.namespace
    digest = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:8]
    return f"dllm-{re.sub(r'[^A-Za-z0-9_-]', '_', run_dir.name)}-{digest}"


def screen_run_rows(cfg: RunConfig, mode: Mode, task: Task, path: str,
                    encode: Callable[[Row], list[int]]) -> tuple[ScreenedRows, ScreenedRows]:
    """The training rows and the held-out rows the run evaluates on (none without evaluation), screened."""
    model = load_config(path, family=cfg.model.family, overrides=cfg.model.overrides())
    r = cfg.rollout
    limits = PromptLimits(model.mask_token_id, model.max_position_embeddings - r.max_new_tokens - r.block_size)
    on_error = cfg.task.params.get("on_error", "raise")
    eval_rows = task.eval_rows(cfg.trainer.eval_prompts, cfg.task.split_seed) if mode.evaluates(cfg) else []
    return (
        screen_prompts(mode.train_rows(task, cfg), encode, limits, on_error, "train"),
        screen_prompts(eval_rows, encode, limits, on_error, "eval"),
    )

