"""The single controller (docs/design.md §8.2): `run_to_end` starts a run and drives it as its mode
says — RL steps (actors/steps.py `rl_step`: rollout and rewards → advantages → update → weights
to the rollout workers, each phase a call on the object that owns it), supervised steps, or an
evaluation. The driver handles each response's RowMeta and scores, never its tokens."""
from __future__ import annotations

from .config import RunConfig
from .hooks import RunHooks
from .modes import mode_for
from .run import Run
from .start import start_run

__all__ = ["run_to_end", "start_run"]


def run_to_end(cfg: RunConfig, hooks: RunHooks | None = None) -> Run:
    """A whole run on the connected Ray cluster: set up, run its mode, then always flush metrics and
    release the actors (the caller owns the Ray connection). `hooks`: see actors/hooks.py."""
    run = start_run(cfg, hooks)
    try:
        mode_for(cfg).run(run)
    finally:
        run.close()
    return run
