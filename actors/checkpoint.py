"""Checkpoints: run_dir/checkpoints/step_N with learner state, an HF export and the driver state.

Written into a temp directory and renamed when complete, so a crash mid-save never leaves a
checkpoint that `resume=auto` would pick. A start that abandons history (a fresh start over an
earlier run, a resume from an earlier step) sets it aside under run_dir/abandoned/<n>/ first."""
from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray
from ray.actor import ActorHandle

from .metrics import METRICS, logged_lines
from .trackers import IDS_FILE

log = logging.getLogger(__name__)

DRIVER_STATE = "driver.json"
BEST = "best"  # checkpoints/best/: the HF export of the best held-out evaluation (never pruned)
BEST_STATE = "best.json"
ABANDONED = "abandoned"  # run_dir/abandoned/<n>/: history a start abandoned, set aside whole (never deleted)
# What a run writes into run_dir besides checkpoints and config.json (actors.metrics, actors.trackers,
# actors.report, actors.evaluate): a fresh start would append to it, read it back or overwrite it.
RUN_OUTPUTS = (METRICS, "tensorboard", IDS_FILE, "summary.json", "curves.png", "trajectories.html")
_STEP = re.compile(r"^step_(\d+)$")
# Config keys whose change makes a checkpoint's learner state unloadable or another model's; DeepSpeed
# also partitions its optimizer state by ZeRO stage and rank count.
_SAME_STATE = ("model.family", "engine.backend")
_SAME_DEEPSPEED_STATE = ("engine.zero_stage", "cluster.learner.num_workers")


def checkpoint_root(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def step_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """Every checkpoints/step_N entry, complete or not, oldest first."""
    root = checkpoint_root(run_dir)
    found = [(int(m.group(1)), p) for p in root.glob("step_*") if (m := _STEP.match(p.name))] if root.is_dir() else []
    return sorted(found)


def incomplete(path: Path) -> str | None:
    """Why `path` is not a checkpoint save_checkpoint finished (None when it is one)."""
    if not path.is_dir():
        return "not a directory"
    missing = [part for part, ok in ((DRIVER_STATE, (path / DRIVER_STATE).is_file()),
                                     ("learner/", (path / "learner").is_dir()),
                                     ("hf/config.json", (path / "hf" / "config.json").is_file())) if not ok]
    if missing:
        return f"no {', '.join(missing)}"
    try:
        json.loads((path / DRIVER_STATE).read_text())
    except ValueError as err:
        return f"{DRIVER_STATE} is not valid JSON ({err})"
    return None


def complete_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    return [(step, p) for step, p in step_dirs(run_dir) if incomplete(p) is None]


def resolve_resume(run_dir: Path, resume: str) -> Path | None:
    """auto: the latest complete checkpoint, skipping (with a warning) incomplete ones, None when
    there is no step_N at all (an error when every one is incomplete: starting afresh would
    overwrite them); never: None; else the given directory, which must be complete."""
    if resume == "never":
        return None
    if resume == "auto":
        skipped: list[str] = []
        for _, path in reversed(step_dirs(run_dir)):
            why = incomplete(path)
            if why is None:
                return path
            log.warning("trainer.resume=auto: skipping %s, an incomplete checkpoint (%s)", path, why)
            skipped.append(f"{path.name}: {why}")
        if skipped:
            raise FileNotFoundError(
                f"trainer.resume=auto: no complete checkpoint under {checkpoint_root(run_dir)}, only incomplete "
                f"ones ({', '.join(reversed(skipped))}); remove them, or set trainer.resume=never or a "
                "checkpoint directory")
        return None
    path = Path(resume)
    if why := incomplete(path):
        raise FileNotFoundError(f"trainer.resume={resume!r}: allowed values are auto, never or a complete checkpoint "
                                f"directory (run_dir/checkpoints/step_N), and {path} is not one ({why})")
    return path


def _own_step(run_dir: Path, resume: str) -> int | None:
    """N when `resume` is this run_dir's own checkpoints/step_N (its history up to N is the run's)."""
    path = Path(resume).resolve()
    match = _STEP.match(path.name)
    return int(match.group(1)) if match and path.parent == checkpoint_root(run_dir).resolve() else None


def _later_than(best: Path, step: int | None) -> bool:
    """Whether the best export is not part of the history up to `step` (None: no history kept; an
    unreadable best.json cannot show it is)."""
    try:
        return step is None or json.loads((best / BEST_STATE).read_text())["step"] > step
    except (OSError, ValueError, KeyError, TypeError):
        return True


def set_aside_abandoned(run_dir: Path, resume: str) -> Path | None:
    """Move the history this start abandons to run_dir/abandoned/<n>/ (same layout), so it is neither
    continued by a later resume=auto nor mixed into this run's metrics, best or trackers, and nothing
    is deleted. A fresh start (never, auto with no step_N, a checkpoint of another directory) abandons
    all of it; resuming this directory's step_K abandons the later step_N, a best export after K and
    the metrics lines after K (TensorBoard hides those steps itself: the resume purges them).
    resume=auto over checkpoints continues the directory's own run: nothing moves. Each entry is
    renamed; a start that finds nothing to move makes no abandoned/<n>. The new place, or None."""
    steps = step_dirs(run_dir)
    if resume == "auto" and steps:
        return None
    keep = None if resume in ("auto", "never") else _own_step(run_dir, resume)
    best = checkpoint_root(run_dir) / BEST
    moves = [p for n, p in steps if keep is None or n > keep]
    moves += [best] if best.exists() and _later_than(best, keep) else []
    moves += [p for p in (run_dir / name for name in RUN_OUTPUTS) if p.exists()] if keep is None else []
    metrics = run_dir / METRICS
    kept: list[str] = []
    later: list[str] = []
    if keep is not None and metrics.is_file():
        for step, line in logged_lines(metrics):
            (later if step > keep else kept).append(line + "\n")
    if not moves and not later:
        return None
    root = run_dir / ABANDONED
    taken = [int(p.name) for p in root.iterdir() if p.name.isdigit()] if root.is_dir() else []
    aside = root / str(max(taken, default=0) + 1)
    aside.mkdir(parents=True)
    for path in moves:
        (aside / path.relative_to(run_dir)).parent.mkdir(parents=True, exist_ok=True)
        path.rename(aside / path.relative_to(run_dir))
    if later:  # the abandoned lines written aside before metrics.jsonl loses them
        (aside / METRICS).write_text("".join(later))
        tmp = metrics.with_name(f".{METRICS}.tmp")
        tmp.write_text("".join(kept))
        tmp.replace(metrics)
    moved = [str(p.relative_to(run_dir)) for p in moves] + [f"{METRICS} after step {keep}"] * bool(later)
    log.warning("trainer.resume=%s starts a new history in %s: moved the abandoned %s to %s (nothing deleted; "
                "resume from there to go back to it)", resume, run_dir, ", ".join(moved), aside)
    return aside


def _dotted(config: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        config = config.get(part, {}) if isinstance(config, dict) else {}
    return config


def check_resumable(path: Path, config: dict[str, Any]) -> None:
    """Raise naming every key (saved vs now) that makes the checkpoint at `path` unloadable with the
    run's `config` (its JSON dump), before the learners read it and fail with torch's or
    DeepSpeed's error; checkpoints older than the config in driver.json are not checked."""
    saved = json.loads((path / DRIVER_STATE).read_text()).get("config")
    if saved is None:
        return
    keys = _SAME_STATE + (_SAME_DEEPSPEED_STATE if _dotted(config, "engine.backend") == "deepspeed" else ())
    changed = [f"{k}: {_dotted(saved, k)!r} there, {_dotted(config, k)!r} now" for k in keys
               if _dotted(saved, k) != _dotted(config, k)]
    if changed:
        raise ValueError(f"checkpoint {path} was written by an incompatible config ({'; '.join(changed)}); "
                         "resume with the same settings, or set trainer.resume=never or another run_dir")


def _discard(path: Path) -> None:
    """Rename `path` to a hidden name, then delete it: a crash mid-delete leaves a `.name.old`,
    never a step_N or best/ with some of its files gone."""
    trash = path.with_name(f".{path.name}.old")
    shutil.rmtree(trash, ignore_errors=True)
    path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def _written_whole(final: Path) -> Iterator[Path]:
    """A fresh temporary sibling of `final` to fill; it replaces `final` only once the block ends
    without an error, so a crash mid-write keeps whatever `final` held. A failed write is removed
    (a disk-full error leaves no partial copy taking the space)."""
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        _discard(final)
    tmp.rename(final)


def prune(run_dir: Path, step: int, keep_last: int) -> None:
    """Delete the oldest step_N so that `keep_last` stay, step_{step} (just written) among them.
    Later steps are not counted nor deleted (an abandoned continuation's were set aside at the
    start, set_aside_abandoned; anything else past the step just written is not pruning's to judge)."""
    older = [p for n, p in complete_checkpoints(run_dir) if n < step]
    for old in older[:max(len(older) - (keep_last - 1), 0)]:
        _discard(old)


def save_checkpoint(ranks: list[ActorHandle], run_dir: Path, step: int, driver_state: dict[str, Any],
                    keep_last: int) -> Path:
    """The learner ranks' state (with optimizer moments), an HF export and the driver state."""
    final = checkpoint_root(run_dir) / f"step_{step}"
    with _written_whole(final) as tmp:
        ray.get([a.save.remote(str(tmp / "learner")) for a in ranks])
        ray.get([a.export_hf.remote(str(tmp / "hf")) for a in ranks])
        (tmp / DRIVER_STATE).write_text(json.dumps(driver_state, indent=2))
    prune(run_dir, step, keep_last)
    return final


def save_best(ranks: list[ActorHandle], run_dir: Path, step: int, accuracy: float) -> Path:
    """Export the current policy as checkpoints/best/hf with best.json ({step, accuracy}), replacing
    the previous best (written to a temporary name, then renamed: a crash keeps the old one)."""
    final = checkpoint_root(run_dir) / BEST
    with _written_whole(final) as tmp:
        ray.get([a.export_hf.remote(str(tmp / "hf")) for a in ranks])
        (tmp / BEST_STATE).write_text(json.dumps({"step": step, "accuracy": accuracy}, indent=2))
    return final


def load_checkpoint(ranks: list[ActorHandle], path: Path) -> dict[str, Any]:
    """Load the learner ranks' state from `path`; its driver state."""
    ray.get([a.load.remote(str(path / "learner")) for a in ranks])
    return json.loads((path / DRIVER_STATE).read_text())
