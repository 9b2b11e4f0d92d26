"""Checkpoints: run_dir/checkpoints/step_N with learner state, an HF export and the driver state.

Written into a temp directory and renamed when complete, so a crash mid-save never leaves a
checkpoint that `resume=auto` would pick."""
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

log = logging.getLogger(__name__)

DRIVER_STATE = "driver.json"
BEST = "best"  # checkpoints/best/: the HF export of the best held-out evaluation (never pruned)
BEST_STATE = "best.json"
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
        found = step_dirs(run_dir)
        for _, path in reversed(found):
            why = incomplete(path)
            if why is None:
                return path
            log.warning("trainer.resume=auto: skipping %s, an incomplete checkpoint (%s)", path, why)
        if found:
            raise FileNotFoundError(
                f"trainer.resume=auto: no complete checkpoint under {checkpoint_root(run_dir)}, only incomplete "
                f"ones ({', '.join(f'{p.name}: {incomplete(p)}' for _, p in found)}); remove them, or set "
                "trainer.resume=never or a checkpoint directory")
        return None
    path = Path(resume)
    if why := incomplete(path):
        raise FileNotFoundError(f"trainer.resume={resume!r}: allowed values are auto, never or a complete checkpoint "
                                f"directory (run_dir/checkpoints/step_N), and {path} is not one ({why})")
    return path


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
    Later steps (left behind when a run resumed from an earlier checkpoint) are not counted nor
    deleted."""
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
