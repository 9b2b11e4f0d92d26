"""Learner fault recovery: a dead learner rank (with the value / reference model it holds) costs
the work since the last checkpoint, not the run.

The driver calls `recover_learners` when a step raised. If a learner rank has died, the whole
group is torn down (the survivors' process group is broken), recreated rank 0 first in the same
bundles, and restored from the run's latest complete checkpoint (or, before the first one, from
the weights training started with); the driver's own state rolls back with it and the rollout
workers are re-synced by the next step. CPU runs are deterministic, so the replayed steps log
what the lost ones would have.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .checkpoint import DRIVER_STATE, load_checkpoint, save_checkpoint
from .pools import dead_learners, replace_learners
from .run import Run, namespace_for

log = logging.getLogger(__name__)


class LearnerGroupLost(RuntimeError):
    """Learner ranks died more often than trainer.max_learner_restarts allows."""


def checkpoint(run: Run) -> Path:
    """Save a checkpoint and make it the point a recovery restores."""
    run.state.restore_point = save_checkpoint(run.pools, run.run_dir, run.state.step, run.driver_state(),
                                              run.cfg.trainer.keep_last)
    return run.state.restore_point


def recover_learners(run: Run, err: BaseException) -> bool:
    """After `err` ended a step: False if every learner rank is alive (not ours to handle), else
    recreate and restore the group (raising LearnerGroupLost past trainer.max_learner_restarts)."""
    if not run.pools.learner:
        return False
    dead = dead_learners(run.pools)
    if not dead:
        return False
    limit = run.cfg.trainer.max_learner_restarts
    if run.state.learner_restarts >= limit:
        where = (
            f"{run.state.restore_point} (step {_step_of(run.state.restore_point)})"
            if run.state.restore_point
            else "the start (no checkpoint was written yet)"
        )
        raise LearnerGroupLost(
            f"learner rank(s) {dead} died at step {run.state.step + 1} after {run.state.learner_restarts} restart(s) "
            f"(trainer.max_learner_restarts={limit}); the run stops here. Run it again with "
            f"trainer.resume=auto to continue from {where}"
        ) from err
    run.state.learner_restarts += 1
    log.warning(
        "learner rank(s) %s died during step %d (%s: %s); restart %d/%d from %s",
        dead,
        run.state.step + 1,
        type(err).__name__,
        err,
        run.state.learner_restarts,
        limit,
        run.state.restore_point or "the start",
    )
    replace_learners(run.pools, run.cfg, run.state.base_path, namespace_for(run.cfg, run.run_dir))
    run.restore(
        load_checkpoint(run.pools, run.state.restore_point) if run.state.restore_point else run.state.start_state
    )
    return True


def _step_of(path: Path) -> int:
    return json.loads((path / DRIVER_STATE).read_text())["step"]
