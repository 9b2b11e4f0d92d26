"""Checkpoints: run_dir/checkpoints/step_N with learner state, an HF export and the driver state.

Written into a temp directory and renamed when complete, so a crash mid-save never leaves a
checkpoint that `resume=auto` would pick."""
from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray
from ray.actor import ActorHandle

DRIVER_STATE = "driver.json"
BEST = "best"  # checkpoints/best/: the HF export of the best held-out evaluation (never pruned)
BEST_STATE = "best.json"
_STEP = re.compile(r"^step_(\d+)$")


def checkpoint_root(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def complete_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    root = checkpoint_root(run_dir)
    found = [(int(m.group(1)), p) for p in root.glob("step_*") if (m := _STEP.match(p.name))
             and (p / DRIVER_STATE).is_file()] if root.is_dir() else []
    return sorted(found)


def resolve_resume(run_dir: Path, resume: str) -> Path | None:
    """auto: the latest complete checkpoint (or None); never: None; else the given directory."""
    if resume == "never":
        return None
    if resume == "auto":
        found = complete_checkpoints(run_dir)
        return found[-1][1] if found else None
    path = Path(resume)
    if not (path / DRIVER_STATE).is_file():
        raise FileNotFoundError(f"trainer.resume={resume!r}: allowed values are auto, never or a complete checkpoint "
                                f"directory (run_dir/checkpoints/step_N), and {path} has no {DRIVER_STATE}")
    return path


@contextmanager
def _written_whole(final: Path) -> Iterator[Path]:
    """A fresh temporary sibling of `final` to fill; it replaces `final` only once the block ends
    without an error, so a crash mid-write keeps whatever `final` held."""
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def save_checkpoint(ranks: list[ActorHandle], run_dir: Path, step: int, driver_state: dict[str, Any],
                    keep_last: int) -> Path:
    """The learner ranks' state (with optimizer moments), an HF export and the driver state."""
    final = checkpoint_root(run_dir) / f"step_{step}"
    with _written_whole(final) as tmp:
        ray.get([a.save.remote(str(tmp / "learner")) for a in ranks])
        ray.get([a.export_hf.remote(str(tmp / "hf")) for a in ranks])
        (tmp / DRIVER_STATE).write_text(json.dumps(driver_state, indent=2))
    for _, old in complete_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
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
