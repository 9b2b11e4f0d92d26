"""Checkpoint directories on hostile input, without Ray: resume=auto over incomplete or stray
step_N entries, an explicit resume path that is no checkpoint."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from actors import checkpoint
from actors.checkpoint import resolve_resume


def _checkpoint(run_dir: Path, name: str) -> Path:
    """A step_N laid out as save_checkpoint leaves it."""
    path = run_dir / "checkpoints" / name
    (path / "learner" / "policy").mkdir(parents=True)
    (path / "learner" / "policy" / "state.pt").write_bytes(b"state")
    (path / "hf").mkdir()
    (path / "hf" / "config.json").write_text("{}")
    (path / checkpoint.DRIVER_STATE).write_text(json.dumps({"step": int(name.removeprefix("step_"))}))
    return path


def test_auto_skips_broken_newer_entries_naming_them(tmp_path, caplog):
    root = tmp_path / "checkpoints"
    good = _checkpoint(tmp_path, "step_2")
    (_checkpoint(tmp_path, "step_3") / checkpoint.DRIVER_STATE).write_text('{"step": 3, "vers')  # truncated
    shutil.rmtree(_checkpoint(tmp_path, "step_4") / "learner")  # a half-deleted checkpoint
    (root / "step_5").mkdir()
    (root / "step_6").write_text("a file, not a directory")
    (root / "step_abc").mkdir()
    (root / "step_-1").mkdir()
    with caplog.at_level(logging.WARNING, logger="actors.checkpoint"):
        assert resolve_resume(tmp_path, "auto") == good
    skipped = caplog.text
    for name, why in (("step_3", "not valid JSON"), ("step_4", "no learner/"), ("step_5", "no driver.json"),
                      ("step_6", "not a directory")):
        assert f"{root / name}" in skipped and why in skipped, name


def test_auto_refuses_to_start_afresh_over_incomplete_checkpoints(tmp_path):
    (tmp_path / "checkpoints" / "step_4").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"only incomplete ones \(step_4: no driver.json"):
        resolve_resume(tmp_path, "auto")
    assert resolve_resume(tmp_path / "elsewhere", "auto") is None  # no checkpoint at all: a fresh start
    assert resolve_resume(tmp_path, "never") is None


def test_an_explicit_resume_path_must_be_a_complete_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        resolve_resume(tmp_path, str(tmp_path))  # the run directory, not a step_N
    path = _checkpoint(tmp_path, "step_2")
    (path / "hf" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no hf/config.json"):
        resolve_resume(tmp_path, str(path))
