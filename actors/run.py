"""Everything a run needs before its first step: model path, task, prompts, pools, metrics, resume."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.checkpoint import load_config
from models.tiny import write_tiny_checkpoint
from models.tokenizer import load_tokenizer
from rollout.requests import PromptRecord
from tasks.prompt_stream import PromptStream
from tasks.prompts import encode_prompt
from tasks.registry import Task, get_task, resolve_reward
from tasks.screen import PromptLimits, ScreenedRows, screen_prompts

from .checkpoint import load_checkpoint, resolve_resume
from .config import RunConfig
from .metrics import MetricsLogger
from .pools import Pools, create_pools
from .schedule import Lockstep, SeparateDevices, devices_for, schedule_for
from .stages import RolloutJob
from .step_data import records_for

log = logging.getLogger(__name__)


@dataclass
class LoopState:
    """What the training loop changes as it goes (checkpointed, rolled back on recovery)."""

    step: int = 0
    version: int = 0  # policy updates applied
    synced: int = 0  # version the rollout workers hold
    job: RolloutJob | None = None  # async: the next step's rollout, already in flight
    job_cursor: dict[str, Any] | None = None  # prompt stream state before `job`'s prompts were drawn
    needs_warmup: bool = False  # no cached warm start yet: the learners start in the warm-up phase
    base_path: str = ""  # what the learners are built from: model.path, or the warm start once it exists
    restore_point: Path | None = None  # the last complete checkpoint this run wrote or resumed from
    start_state: dict[str, Any] | None = None  # driver state when training began (restored if no checkpoint yet)
    learner_restarts: int = 0  # times the learner group was recreated after a rank died


@dataclass(frozen=True)
class Run:
    """A run's fixed context (config, pools, data, logger) and its `state`, the loop's variables."""

    cfg: RunConfig
    run_dir: Path
    pools: Pools
    task: Task
    tokenizer: Any
    prompts: PromptStream | None  # training prompts; None when only evaluating
    metrics: MetricsLogger
    eval_rows: dict[str, dict[str, Any]]
    eval_prompts: list[list[int]]
    warm_dir: Path | None = None  # where this run's SFT warm start is (or will be) cached
    sft_prompts: PromptStream | None = None  # rows of supervised steps: mode=sft's or the warm-up's
    schedule: Lockstep = field(default_factory=Lockstep)  # Prefetch when async (actors/schedule.py)
    devices: SeparateDevices = field(default_factory=SeparateDevices)  # Colocated when cluster.colocate
    state: LoopState = field(default_factory=LoopState)

    def encode(self, row: dict[str, Any]) -> list[int]:
        return encode_prompt(row, self.tokenizer, self.cfg.task.template or self.task.template, self.task.kind)

    def next_prompts(self) -> tuple[list[PromptRecord], dict[str, dict[str, Any]]]:
        """The next step's (prompt, sample) records and their rows, drawn from the seeded prompt stream."""
        self.state.job_cursor = self.prompts.state_dict()
        batch = self.prompts.next_batch(self.cfg.trainer.prompts_per_step)
        records = records_for(
            [s.uid for s in batch], [self.encode(s.row) for s in batch], self.cfg.trainer.responses_per_prompt
        )
        return records, {s.uid: s.row for s in batch}

    def next_pairs(self, n: int) -> list[tuple[list[int], list[int]]]:
        """(prompt ids, reference solution ids + EOS) for supervised steps."""
        pairs = []
        for s in self.sft_prompts.next_batch(n):
            if not (s.row.get("solution") or s.row.get("ground_truth_answer")):
                raise ValueError(
                    f"supervised steps need rows with 'solution' or 'ground_truth_answer'; got {sorted(s.row)}"
                )
            text = s.row.get("solution") or f"\\boxed{{{s.row['ground_truth_answer']}}}"
            pairs.append(
                (
                    self.encode(s.row),
                    self.tokenizer.encode(text, add_special_tokens=False) + [self.tokenizer.eos_token_id],
                )
            )
        return pairs

    def driver_state(self) -> dict[str, Any]:
        s = self.state
        return {
            "step": s.step,
            "version": s.version,
            # The prompt stream's cursor; the key predates Run.prompts (checkpoints keep resuming).
            "sampler": s.job_cursor or self.prompts.state_dict(),
            "config": self.cfg.model_dump(mode="json", by_alias=True),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Go back to a saved driver state (the learners hold its weights): data cursor, version,
        no rollout in flight, rollout workers to be re-synced, later metrics forgotten."""
        s = self.state
        s.step, s.version, s.synced = state["step"], state["version"], -1
        s.job = s.job_cursor = None
        self.prompts.load_state_dict(state["sampler"])
        self.metrics.rewind(s.step)


def model_path(cfg: RunConfig, run_dir: Path) -> str:
    if cfg.model.path is not None:
        return cfg.model.path
    path = run_dir / "tiny_model"
    if not (path / "config.json").is_file():
        write_tiny_checkpoint(path, seed=cfg.model.init_seed)
    return str(path)


def warm_start_dir(cfg: RunConfig) -> Path | None:
    """The cache entry for this run's warm start: a hash of everything that produces it."""
    if not cfg.warmup.steps or cfg.mode != "rl":
        return None
    key = json.dumps(
        {
            "model": cfg.model.model_dump(mode="json"),
            "task": cfg.task.model_dump(mode="json"),
            "warmup": cfg.warmup.model_dump(mode="json", exclude={"cache_dir"}),
            "engine": cfg.engine.model_dump(
                mode="json", exclude={"lr", "schedule", "warmup_steps", "total_steps", "min_lr_ratio"}
            ),
            "seed": cfg.trainer.seed,
        },
        sort_keys=True,
    )
    return Path(cfg.warmup.cache_dir) / hashlib.sha1(key.encode()).hexdigest()[:12]


def namespace_for(cfg: RunConfig, run_dir: Path) -> str:
    """A per-run Ray namespace: actor names repeat across runs, namespaces keep them apart."""
    if cfg.ray.namespace:
        return cfg.ray.namespace
    digest = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:8]
    return f"dllm-{re.sub(r'[^A-Za-z0-9_-]', '_', run_dir.name)}-{digest}"


def start_run(cfg: RunConfig) -> Run:
    run_dir = Path(cfg.trainer.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cfg.model_dump(mode="json", by_alias=True), indent=2))
    path = model_path(cfg, run_dir)
    task = get_task(cfg.task.name, **cfg.task.params)
    resolve_reward(cfg.task.reward or task.reward_path)  # a bad name fails here, not in every reward worker
    trainer = cfg.trainer
    # Evaluation needs no training rows (an evaluation-only file may have none: eval_fraction=1).
    # Every prompt the run will use is checked now, naming any bad row (tasks/screen.py).
    train, evals = screen_run_rows(
        cfg, task, path, [] if cfg.mode == "eval" else task.train_rows(cfg.task.train_size, cfg.task.split_seed)
    )
    prompts = None if cfg.mode == "eval" else PromptStream(train.rows, seed=trainer.seed)
    resume = resolve_resume(run_dir, trainer.resume)
    if resume is None and trainer.resume == "auto":  # a fresh start: earlier metrics of this run_dir are stale
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    namespace = namespace_for(cfg, run_dir)
    warm_dir = warm_start_dir(cfg)
    cached = warm_dir is not None and (warm_dir / "config.json").is_file()
    if cached:
        path = str(warm_dir)
        log.info("using the cached warm start %s", warm_dir)
    needs_warmup = warm_dir is not None and not cached and resume is None
    pools = create_pools(
        cfg, path, cfg.task.reward or task.reward_path, namespace, warmup=needs_warmup, learners=cfg.mode != "eval"
    )
    metrics = MetricsLogger(run_dir, trainer.logger, namespace, cfg.model_dump(mode="json", by_alias=True))
    eval_rows = {f"eval-{i}": row for i, row in enumerate(evals.rows)}
    sft_prompts = prompts if cfg.mode == "sft" else None
    if needs_warmup:  # the first warmup.train_size training rows (train_rows(n) is a prefix of train_rows(m > n))
        sft_prompts = PromptStream(prompts.rows[: cfg.warmup.train_size], seed=trainer.seed)
    run = Run(
        cfg,
        run_dir,
        pools,
        task,
        load_tokenizer(path),
        prompts,
        metrics,
        eval_rows,
        evals.prompts,
        warm_dir=warm_dir,
        sft_prompts=sft_prompts,
        schedule=schedule_for(cfg),
        devices=devices_for(cfg),
        state=LoopState(needs_warmup=needs_warmup, base_path=path),
    )
    skipped = len(task.skipped_rows) + len(train.skipped) + len(evals.skipped)
    if skipped and resume is None:
        metrics.log(0, {"data/skipped_rows": float(skipped)})
    if resume is not None:
        run.restore(load_checkpoint(pools, resume))  # (rollout workers hold the base weights until synced)
        run.state.restore_point = resume
        log.info("resumed from %s at step %d", resume, run.state.step)
    return run


def screen_run_rows(
    cfg: RunConfig, task: Task, path: str, train_rows: list[dict[str, Any]]
) -> tuple[ScreenedRows, ScreenedRows]:
    """Train rows and the eval rows the run evaluates on (none without evaluation), screened."""
    model = load_config(path, family=cfg.model.family, overrides=cfg.model.overrides())
    r = cfg.rollout
    limits = PromptLimits(model.mask_token_id, model.max_position_embeddings - r.max_new_tokens - r.block_size)
    encode = functools.partial(
        encode_prompt, tokenizer=load_tokenizer(path), template=cfg.task.template or task.template, kind=task.kind
    )
    on_error = cfg.task.params.get("on_error", "raise")
    evaluates = cfg.mode == "eval" or cfg.trainer.eval_every > 0
    eval_rows = task.eval_rows(cfg.trainer.eval_prompts, cfg.task.split_seed) if evaluates else []
    return (
        screen_prompts(train_rows, encode, limits, on_error, "train"),
        screen_prompts(eval_rows, encode, limits, on_error, "eval"),
    )
