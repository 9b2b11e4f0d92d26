"""The single-controller loop: rollout → rewards → advantages → update → weight sync (docs/design.md §8).

The rollout schedule and the device sharing (actors/schedule.py) are objects the run chose once
(`Run.schedule`, `Run.devices`) and the RL step calls at fixed points; `Run.state` holds what the
loop changes, `StepTimer` one step's phase seconds. The driver handles each response's RowMeta
and scores, never its tokens: learner ranks fetch their rows from the object store."""
from __future__ import annotations

import logging
import shutil
import time
from functools import partial

import ray
from tqdm import tqdm

from learner.advantages import AdvantageResult, group_advantages
from rewards.result import Score
from rollout.trajectory_batch import RowMeta

from .config import RunConfig
from .evaluate import decode_eval, write_eval
from .payloads import fetch
from .process_stage import apply_rewards, weigh_outcome
from .recovery import checkpoint, recover_learners
from .report import write_report
from .run import Run, start_run
from .schedule import StepTimer, sync
from .stages import RolloutJob, collect
from .step_data import check_reward_failures, correct_only, learner_shards, rollout_metrics, to_groups, update_metrics

log = logging.getLogger(__name__)
Scores = dict[tuple[str, int], Score]  # by (prompt uid, sample index)


def run_to_end(cfg: RunConfig) -> Run:
    """A whole run on the connected Ray cluster: set up, train, then always flush metrics and
    release the pools (the caller owns the Ray connection)."""
    run = start_run(cfg)
    try:
        if cfg.mode == "eval":
            write_eval(run)
        else:
            train(run)
    finally:
        run.metrics.close(plot=cfg.trainer.plot)
        run.pools.shutdown()
    return run


def train(run: Run) -> None:
    trainer = run.cfg.trainer
    start = time.perf_counter()
    if run.state.step == 0:
        if run.state.needs_warmup:
            warmup(run)
        if trainer.eval_every:
            evaluate(run)  # the starting point every later evaluation is compared with
    run.state.start_state = run.driver_state()
    bar = tqdm(total=trainer.steps, initial=run.state.step, desc="steps", disable=not trainer.progress)
    while run.state.step < trainer.steps:
        try:
            out_of_time = advance(run, start)
        except Exception as err:  # a dead learner rank: recreate the group, restore, replay from there
            if not recover_learners(run, err):
                raise
            bar.n = run.state.step
            continue
        bar.update(1)
        if out_of_time:
            break
    bar.close()
    write_report(run, time.perf_counter() - start)


def advance(run: Run, start: float) -> bool:
    """One training step with its logging, evaluation and checkpoint; True when out of time."""
    trainer = run.cfg.trainer
    m = sft_step(run, run.state.step) if run.cfg.mode == "sft" else rl_step(run)
    run.state.step += 1
    run.metrics.log(run.state.step, m)
    shown = [k for k in sorted(m) if k.endswith(("reward_mean", "accuracy", "_s", "loss"))]
    log.info("step %d/%d %s", run.state.step, trainer.steps, ", ".join(f"{k} {m[k]:.3f}" for k in shown))
    out_of_time = trainer.max_wall_s is not None and time.perf_counter() - start >= trainer.max_wall_s
    if out_of_time:
        log.info("trainer.max_wall_s=%s reached after %d steps", trainer.max_wall_s, run.state.step)
    last = run.state.step == trainer.steps or out_of_time
    if trainer.eval_every and (run.state.step % trainer.eval_every == 0 or last):
        evaluate(run)
    if last or (trainer.checkpoint_every and run.state.step % trainer.checkpoint_every == 0):
        checkpoint(run)
    return out_of_time


def rl_step(run: Run) -> dict[str, float]:
    timer = StepTimer()
    job, samples, scores = rollout(run, timer)
    scores, per_token, m = rewards(run, job, samples, scores, timer)
    run.schedule.rollout_done(run, timer)
    adv = advantages(run, samples, scores, per_token, timer)
    m.update({f"dropped_groups/{k}": float(v) for k, v in adv.dropped.items()})
    if adv.skip_reason:
        log.warning("step %d: no update, %s", run.state.step, adv.skip_reason)
        m["skipped"] = 1.0
    else:
        m |= run.devices.free_for_update(run, timer)
        m |= update(run, adv, timer)
    run.schedule.sync(run, timer)
    return {**m, **timer.seconds, "sync_s": timer.seconds.get("sync_s", 0.0), "version": float(run.state.version)}


def rollout(run: Run, timer: StepTimer) -> tuple[RolloutJob, list[RowMeta], Scores]:
    """This step's rows in request order, with their outcome scores."""
    job = run.schedule.take_job(run, timer)
    with timer("rollout_s"):  # rewards are scored as shards come back
        samples, scores = collect(run.pools, job, run.state.version, run.cfg.trainer.reward_chunk,
                                  run.cfg.trainer.progress)
    # Request order, not arrival order: what follows sums over them, and a replay must sum alike.
    order = {(r.uid, r.sample_idx): i for i, r in enumerate(job.records)}
    samples.sort(key=lambda m: order[m.key])
    return job, samples, scores


def rewards(run: Run, job: RolloutJob, samples: list[RowMeta], scores: Scores,
            timer: StepTimer) -> tuple[Scores, dict[tuple[str, int], list[float]], dict[str, float]]:
    """Stop on too many failed rewards, add process rewards (a no-op by default), and the rollout's
    metrics; also the per-token process rewards for a value model (empty by default)."""
    cfg = run.cfg
    check_reward_failures(scores.values(), cfg.reward.max_failed_fraction, f"step {run.state.step + 1}")
    scores, per_token, judge_m = apply_rewards(cfg, run.pools.judge, run.tokenizer, job.rows,
                                               partial(fetch, samples), scores)
    m = rollout_metrics(samples, scores, timer.seconds["rollout_s"], run.state.version) | judge_m
    m["reissued"] = float(sum(job.reissued.values()))
    return scores, per_token, m


def advantages(run: Run, samples: list[RowMeta], scores: Scores, per_token: dict[tuple[str, int], list[float]],
               timer: StepTimer) -> AdvantageResult:
    """Group advantages; for an objective supervised on rollouts, the correct ones with weight 1."""
    cfg = run.cfg
    with timer("advantage_s"):
        if cfg.algo.objective.supervised_on == "rollouts":
            return correct_only(samples, scores)
        return weigh_outcome(cfg, group_advantages(to_groups(samples, scores), cfg.algo.advantage), per_token)


def update(run: Run, adv: AdvantageResult, timer: StepTimer) -> dict[str, float]:
    """Every learner rank fetches its rows and updates on them; rank 0's figures are global."""
    with timer("update_s"):
        shards = learner_shards(adv, len(run.pools.learner))
        stats = ray.get([a.rl_step.remote(s.samples, s.advantages, s.process_rewards, run.state.step)
                         for a, s in zip(run.pools.learner, shards)])[0]
    run.state.version += 1
    return update_metrics(stats, adv.samples, timer.seconds["update_s"])


def sft_step(run: Run, step: int) -> dict[str, float]:
    """One supervised step on reference solutions (rollout workers catch up at the next sync)."""
    cfg, timer = run.cfg, StepTimer()
    pairs = run.next_pairs(cfg.trainer.prompts_per_step if cfg.mode == "sft" else cfg.warmup.prompts_per_step)
    freed = run.devices.free_for_update(run, timer)
    with timer("update_s"):
        n = len(run.pools.learner)
        stats = ray.get([a.sft_step.remote(pairs[r::n], step) for r, a in enumerate(run.pools.learner)])[0]
    run.state.version += 1
    learner_m = {f"learner/{k}": float(v) for k, v in stats.items()}
    return {**learner_m, **freed, **timer.seconds, "version": float(run.state.version)}


def warmup(run: Run) -> None:
    """SFT warm start before RL; logged at steps -N+1..0 under warmup/."""
    n = run.cfg.warmup.steps
    for i in tqdm(range(n), desc="warm-up", disable=not run.cfg.trainer.progress):
        m = sft_step(run, i)
        run.metrics.log(i + 1 - n, {f"warmup/{k}": v for k, v in m.items()})
        if (i + 1) % 10 == 0 or i + 1 == n:
            log.info("warm-up %d/%d sft_loss %.3f", i + 1, n, m.get("learner/sft_loss", float("nan")))
    # Cache the warm start (written to a temporary name, then renamed: a crash leaves no half
    # entry), then restart the learners from it with the RL optimizer.
    tmp = run.warm_dir.with_name(run.warm_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    ray.get([a.export_hf.remote(str(tmp)) for a in run.pools.learner])
    tmp.rename(run.warm_dir)
    ray.get([a.start_rl.remote(str(run.warm_dir)) for a in run.pools.learner])
    run.state.needs_warmup = False
    run.state.base_path = str(run.warm_dir)  # a recreated learner group starts from here
    log.info("warm start cached at %s", run.warm_dir)


def evaluate(run: Run) -> dict[str, float]:
    """avg@k on the held-out rows with the eval sampling params (greedy by default)."""
    trainer = run.cfg.trainer
    sync(run, StepTimer())
    m, samples, scores = decode_eval(run, run.cfg.eval_params(), trainer.eval_samples, "eval/", trainer.progress)
    check_reward_failures(scores.values(), run.cfg.reward.max_failed_fraction, f"evaluation at step {run.state.step}")
    run.metrics.log(run.state.step, m)
    log.info("eval at step %d: accuracy %.3f over %d samples", run.state.step, m["eval/accuracy"], len(samples))
    return m
