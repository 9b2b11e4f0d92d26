"""Checkpoint directories on hostile input, without Ray: resume=auto over incomplete or stray
step_N entries, an explicit resume path that is no checkpoint, crash-safe replacement and pruning,
and a start that abandons part of the run directory's history (set aside, never mixed in)."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from actors import checkpoint
from actors.checkpoint import _written_whole, check_resumable, prune, resolve_resume
from actors.metrics import logged_lines
from actors.start import prepare_run_dir
from support import compose_config


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
    with pytest.raises(FileNotFoundError, match="is not one"):
        resolve_resume(tmp_path, str(tmp_path))  # the run directory, not a step_N
    path = _checkpoint(tmp_path, "step_2")
    (path / "hf" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no hf/config.json"):
        resolve_resume(tmp_path, str(path))


def _killed_mid_delete(monkeypatch, victim: Path) -> None:
    """shutil.rmtree of `victim` (under any name) removes driver.json's siblings, then dies."""
    real = shutil.rmtree

    def rmtree(path, *args, **kwargs):
        if Path(path).is_dir() and Path(path).name.strip(".").removesuffix(".old") == victim.name:
            for part in Path(path).iterdir():
                if part.name != checkpoint.DRIVER_STATE and part.name != checkpoint.BEST_STATE:
                    real(part)
            raise KeyboardInterrupt("killed")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.shutil, "rmtree", rmtree)


def test_a_kill_while_pruning_leaves_no_half_deleted_step(tmp_path, monkeypatch):
    old, newer = _checkpoint(tmp_path, "step_2"), _checkpoint(tmp_path, "step_4")
    _killed_mid_delete(monkeypatch, old)
    with pytest.raises(KeyboardInterrupt):
        prune(tmp_path, 4, keep_last=1)
    assert [p.name for _, p in checkpoint.step_dirs(tmp_path)] == ["step_4"]
    assert resolve_resume(tmp_path, "auto") == newer


def test_a_kill_while_replacing_best_leaves_no_half_deleted_best(tmp_path, monkeypatch):
    best = tmp_path / "checkpoints" / checkpoint.BEST
    (best / "hf").mkdir(parents=True)
    (best / checkpoint.BEST_STATE).write_text('{"step": 2}')
    _killed_mid_delete(monkeypatch, best)
    with pytest.raises(KeyboardInterrupt):
        with _written_whole(best) as tmp:
            (tmp / checkpoint.BEST_STATE).write_text('{"step": 4}')
    assert not best.exists() or (best / "hf").is_dir()  # best.json never outlives its export


def test_a_failed_save_keeps_the_previous_checkpoint_and_leaves_no_partial_copy(tmp_path):
    previous = _checkpoint(tmp_path, "step_2")
    with pytest.raises(OSError, match="No space"):
        with _written_whole(tmp_path / "checkpoints" / "step_4") as tmp:
            (tmp / "learner").mkdir()
            raise OSError(28, "No space left on device")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_2"]
    assert resolve_resume(tmp_path, "auto") == previous


def test_pruning_keeps_the_checkpoint_just_written(tmp_path):
    """A later step_8 beside the run's own (the start sets an abandoned one aside; this is the guard
    if one is there anyway): writing step_6 with keep_last=1 must keep step_6 (the group's restore
    point), not only the later step_8."""
    for name in ("step_2", "step_4", "step_8"):
        _checkpoint(tmp_path, name)
    new = _checkpoint(tmp_path, "step_6")
    prune(tmp_path, 6, keep_last=1)
    assert [p.name for _, p in checkpoint.complete_checkpoints(tmp_path)] == ["step_6", "step_8"]
    prune(tmp_path, 6, keep_last=3)  # fewer than keep_last: nothing goes
    assert new.is_dir()


def test_resuming_with_a_config_that_cannot_load_the_state_is_named(tmp_path):
    path = _checkpoint(tmp_path, "step_2")
    saved = {"model": {"family": "tiny", "path": None}, "engine": {"backend": "deepspeed", "zero_stage": 2},
             "cluster": {"learner": {"num_workers": 2}}, "trainer": {"steps": 2}}
    (path / checkpoint.DRIVER_STATE).write_text(json.dumps({"step": 2, "config": saved}))
    check_resumable(path, {**saved, "trainer": {"steps": 4}})  # more steps: a plain continuation
    other = {**saved, "model": {"family": "llada", "path": "/m"}, "cluster": {"learner": {"num_workers": 4}}}
    with pytest.raises(ValueError, match=r"step_2 .*model.family: 'tiny' there, 'llada' now; "
                                         r"cluster.learner.num_workers: 2 there, 4 now"):
        check_resumable(path, other)
    torch_now = {**saved, "engine": {"backend": "torch", "zero_stage": 0}, "cluster": {"learner": {"num_workers": 4}}}
    with pytest.raises(ValueError, match=r"engine.backend: 'deepspeed' there, 'torch' now\)"):
        check_resumable(path, torch_now)  # torch's state is whole on rank 0: any rank count loads it


def _earlier_run(run_dir: Path) -> None:
    """step_2, step_4, the best export (step 4) and metrics for steps 0-4, as a finished run leaves them."""
    for name in ("step_2", "step_4"):
        _checkpoint(run_dir, name)
    best = run_dir / "checkpoints" / checkpoint.BEST
    (best / "hf").mkdir(parents=True)
    (best / checkpoint.BEST_STATE).write_text('{"step": 4, "accuracy": 0.5}')
    (run_dir / "metrics.jsonl").write_text("".join(f'{{"step": {s}, "reward_mean": 0.{s}}}\n' for s in range(5)))
    (run_dir / "tensorboard").mkdir()
    (run_dir / "tensorboard" / "events.out.tfevents.1").write_bytes(b"events")


def _start(run_dir: Path, resume: str) -> None:
    prepare_run_dir(compose_config([f"trainer.run_dir={run_dir}", f"trainer.resume={resume}"]))


def test_a_fresh_start_sets_the_earlier_run_aside_whole(tmp_path, caplog):
    """resume=never over an earlier run: a later resume=auto must not continue the earlier run's
    step_4, nor the new run compare against its best or append to its metrics; nothing is deleted."""
    run = tmp_path / "run"
    _earlier_run(run)
    prepare_run_dir(compose_config(["mode=eval", "model.path=/ckpt", f"trainer.run_dir={run}"]))
    assert resolve_resume(run, "auto") == run / "checkpoints" / "step_4"  # an evaluation (resume=never) moves none
    with caplog.at_level(logging.WARNING, logger="actors.checkpoint"):
        _start(run, "never")
    aside = run / "abandoned" / "1"
    assert "abandoned/1" in caplog.text and "step_4" in caplog.text
    assert resolve_resume(run, "auto") is None and not (run / "checkpoints" / checkpoint.BEST).exists()
    assert not (run / "metrics.jsonl").exists() and not (run / "tensorboard").exists()
    assert resolve_resume(aside, "auto") == aside / "checkpoints" / "step_4"  # moved intact
    assert [p.name for _, p in checkpoint.complete_checkpoints(aside)] == ["step_2", "step_4"]
    assert json.loads((aside / "checkpoints" / checkpoint.BEST / checkpoint.BEST_STATE).read_text())["step"] == 4
    assert len((aside / "metrics.jsonl").read_text().splitlines()) == 5
    assert (aside / "tensorboard" / "events.out.tfevents.1").read_bytes() == b"events"
    _start(run, "never")  # nothing left to set aside: no empty abandoned/2
    assert sorted(p.name for p in (run / "abandoned").iterdir()) == ["1"]


def test_resuming_an_earlier_step_sets_the_abandoned_continuation_aside(tmp_path):
    """resume=step_2 where step_4 exists: after a crash, resume=auto must continue from the new run's
    progress, not the abandoned step_4; step_4's best and metrics go with it, steps 0-2 stay."""
    run = tmp_path / "run"
    _earlier_run(run)
    _start(run, str(run / "checkpoints" / "step_2"))
    aside = run / "abandoned" / "1"
    assert resolve_resume(run, "auto") == run / "checkpoints" / "step_2"
    assert [p.name for _, p in checkpoint.step_dirs(aside)] == ["step_4"]
    assert (aside / "checkpoints" / checkpoint.BEST / "hf").is_dir()
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2]
    assert [json.loads(line)["step"] for line in (aside / "metrics.jsonl").read_text().splitlines()] == [3, 4]
    assert (run / "tensorboard").is_dir()  # the resume purges TensorBoard's later steps itself
    before = sorted(p.relative_to(run) for p in run.rglob("*") if p.name != "config.json")
    _start(run, "auto")  # an unmixed directory: resume=auto touches nothing
    _start(run, str(run / "checkpoints" / "step_2"))  # and the same resume again finds nothing to move
    assert sorted(p.relative_to(run) for p in run.rglob("*") if p.name != "config.json") == before


def test_a_best_export_of_the_kept_history_stays(tmp_path):
    run = tmp_path / "run"
    _earlier_run(run)
    (run / "checkpoints" / checkpoint.BEST / checkpoint.BEST_STATE).write_text('{"step": 2, "accuracy": 0.5}')
    _start(run, str(run / "checkpoints" / "step_2"))
    assert (run / "checkpoints" / checkpoint.BEST / "hf").is_dir()
    assert [p.name for _, p in checkpoint.step_dirs(run / "abandoned" / "1")] == ["step_4"]


def test_a_fresh_start_without_checkpoints_keeps_the_earlier_metrics(tmp_path):
    """resume=auto with no step_N starts afresh: the metrics of a run that crashed before its first
    checkpoint are set aside, not deleted."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "reward_mean": 0.1}\n')
    _start(run, "auto")
    assert (run / "abandoned" / "1" / "metrics.jsonl").read_text() == '{"step": 1, "reward_mean": 0.1}\n'
    assert not (run / "metrics.jsonl").exists()


def test_a_metrics_line_cut_off_by_a_crash_does_not_stop_the_resume(tmp_path, caplog):
    """The run died writing its last metrics line: the resume drops that line (with a warning) when it
    sets the abandoned steps aside and when it rewinds; a malformed line before the end is an error."""
    run = tmp_path / "run"
    _earlier_run(run)
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "rew')
    with caplog.at_level(logging.WARNING, logger="actors.metrics"):
        _start(run, str(run / "checkpoints" / "step_2"))
    assert "cut off mid-write" in caplog.text
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2]
    # What MetricsLogger.rewind keeps, too: every whole line; a malformed one before the end is named.
    (run / "metrics.jsonl").open("a").write('{"step": 3}\n{"step": 4')
    assert [step for step, _ in logged_lines(run / "metrics.jsonl")] == [0, 1, 2, 3]
    (run / "metrics.jsonl").write_text('{"step": 0}\nnot json\n{"step": 1}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a metrics line"):
        logged_lines(run / "metrics.jsonl")
