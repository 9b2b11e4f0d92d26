"""One training step of each kind, as the driver runs it (docs/design.md §8.2): an RL step, one
phase per line on the object that owns it; a supervised step; the SFT warm start."""
from __future__ import annotations

import logging

from tqdm import tqdm

from .refill import batch_advantages
from .run import Run
from .step_metrics import advantage_step_metrics, batch_metrics, step_end_metrics
from .timer import StepTimer

log = logging.getLogger(__name__)


def rl_step(run: Run) -> dict[str, float]:
    """Rollout with rewards → advantages (more prompts while groups are missing, with dynamic
    sampling) → (lost batches decoded again) → update → the rollout workers take the new weights."""
    timer = StepTimer()
    batch = run.rollout.step_batch(run.state.step, timer)
    batch, adv = batch_advantages(run, batch, timer)  # dynamic sampling refills it (actors/refill.py)
    m = batch_metrics(batch, run.learner.version)
    adv.samples = run.rollout.regenerate_lost(adv.samples)  # batches whose node died or is draining
    m |= advantage_step_metrics(adv) | run.learner.train(adv, run.state.step, timer)
    run.rollout.after_update(timer)
    return (m | step_end_metrics(timer.seconds, run.learner.version)
            | {"sync_bytes": float(run.learner.take_sent_bytes())} | run.rollout.cluster_metrics())


def sft_step(run: Run) -> dict[str, float]:
    """mode=sft's step: supervised on trainer.prompts_per_step reference solutions."""
    return supervised_step(run, run.state.step, run.cfg.trainer.prompts_per_step)


def supervised_step(run: Run, step: int, prompts: int) -> dict[str, float]:
    """One supervised step on `prompts` reference solutions (the rollout workers catch up at the
    next publish)."""
    timer = StepTimer()
    m = run.learner.train_supervised(run.next_pairs(prompts), step, timer)
    return {**m, **timer.seconds, "version": float(run.learner.version)}


def warm_up(run: Run) -> None:
    """SFT warm start before RL, logged at steps -N+1..0 under warmup/; then cached, and the learners
    restart from it with the RL optimizer."""
    n = run.cfg.warmup.steps
    for i in tqdm(range(n), desc="warm-up", disable=not run.cfg.trainer.progress):
        m = supervised_step(run, i, run.cfg.warmup.prompts_per_step)
        run.metrics.log(i + 1 - n, {f"warmup/{k}": v for k, v in m.items()})
        if (i + 1) % 10 == 0 or i + 1 == n:
            log.info("warm-up %d/%d sft_loss %.3f", i + 1, n, m.get("learner/sft_loss", float("nan")))
    run.learner.finish_warmup(run.warm_dir)
    run.state.needs_warmup = False
    log.info("warm start cached at %s", run.warm_dir)
