"""The training loop around a step (docs/design.md §8.2): the warm start, evaluation, checkpoints,
the time limit, recovery from a dead learner rank, preemption warnings on the learners' nodes
(§8.6), and the end-of-run report."""
from __future__ import annotations

import logging
import time
from typing import Callable

from tqdm import tqdm

from .evaluate import evaluate
from .placement import bundle
from .report import write_report
from .run import Run
from .steps import warm_up

log = logging.getLogger(__name__)
Step = Callable[[Run], dict[str, float]]


def train(run: Run, step: Step) -> None:
    trainer = run.cfg.trainer
    start = time.perf_counter()
    if run.state.step == 0:
        if run.state.needs_warmup:
            warm_up(run)
        if trainer.eval_every:
            evaluate_and_keep(run)  # the starting point every later evaluation is compared with
    run.state.start_state = run.driver_state()
    bar = tqdm(total=trainer.steps, initial=run.state.step, desc="steps", disable=not trainer.progress)
    while run.state.step < trainer.steps:
        run.hooks.step_started(run.state.step + 1)
        try:
            out_of_time = advance(run, step, start)
        except Exception as err:  # a dead learner rank: recreate the group, restore, replay from there
            restored = run.learner.recover(err, run.state.step, run.state.start_state)
            if restored is None:
                raise
            run.rollout.watch.steps_lost += run.state.step - restored["step"]
            run.restore(restored)
            bar.n = run.state.step
            continue
        bar.update(1)
        if out_of_time:
            break
        if run.state.step < trainer.steps:
            heed_preemption(run)
    bar.close()
    write_report(run, time.perf_counter() - start)


def evaluate_and_keep(run: Run) -> None:
    """Evaluate on the held-out split; with trainer.keep_best, export the policy when it beats the
    best evaluation so far (the first of equal bests stays)."""
    accuracy, best = evaluate(run)["eval/accuracy"], run.state.best
    if run.cfg.trainer.keep_best and (best is None or accuracy > best["accuracy"]):
        run.state.best = {"step": run.state.step, "accuracy": accuracy}
        run.learner.save_best(run.run_dir, run.state.step, accuracy)


class ClusterDrained(RuntimeError):
    """Every node that could hold a learner rank is draining or gone: the run stopped after a checkpoint."""


def heed_preemption(run: Run) -> None:
    """Between steps: when a node holding learner ranks is draining, checkpoint now (just in time),
    so that the recovery after the node goes replays no finished step; when no usable node could
    hold a learner rank any more, checkpoint and stop (ClusterDrained, resumable)."""
    watch, learner, step = run.rollout.watch.poll(), run.learner, run.state.step
    warned = sorted({node for node in learner.nodes if node in watch.draining})
    if not warned:
        return
    nowhere = not watch.fits_anywhere(bundle(run.cfg.cluster.learner, run.cfg.cluster.rollout
                                             if run.cfg.cluster.colocate else None))
    if learner.restore_point is None or learner.restore_point.name != f"step_{step}":
        path = learner.checkpoint(run.run_dir, step, run.driver_state())
        log.warning("learner node(s) %s draining: just-in-time checkpoint %s", [n[:8] for n in warned], path)
    if nowhere:
        raise ClusterDrained(f"every node that could hold a learner rank is draining or gone (draining: "
                             f"{[n[:8] for n in watch.draining]}); checkpoint {learner.restore_point} holds step "
                             f"{step}: run again with trainer.resume=auto once the cluster has capacity")


def advance(run: Run, step: Step, start: float) -> bool:
    """One training step with its logging, evaluation and checkpoint; True when out of time."""
    trainer = run.cfg.trainer
    m = step(run)
    run.state.step += 1
    run.metrics.log(run.state.step, m)
    shown = [k for k in sorted(m) if k.endswith(("reward_mean", "accuracy", "_s", "loss"))]
    log.info("step %d/%d %s", run.state.step, trainer.steps, ", ".join(f"{k} {m[k]:.3f}" for k in shown))
    out_of_time = trainer.max_wall_s is not None and time.perf_counter() - start >= trainer.max_wall_s
    if out_of_time:
        log.info("trainer.max_wall_s=%s reached after %d steps", trainer.max_wall_s, run.state.step)
    last = run.state.step == trainer.steps or out_of_time
    if trainer.eval_every and (run.state.step % trainer.eval_every == 0 or last):
        evaluate_and_keep(run)
    if last or (trainer.checkpoint_every and run.state.step % trainer.checkpoint_every == 0):
        run.learner.checkpoint(run.run_dir, run.state.step, run.driver_state())
    return out_of_time
