"""The single-controller loop: rollout → reward → advantages → update → weight sync (DESIGN §8)."""
from __future__ import annotations

import logging
import shutil
import time
from contextlib import contextmanager
from collections.abc import Iterator

import ray
from tqdm import tqdm

from learner.advantages import group_advantages

from .config import RunConfig
from .sync import sync_weights
from .process_stage import apply_rewards, weigh_outcome
from .recovery import checkpoint, recover_learners
from .evaluate import decode_eval, write_eval
from .report import write_report
from .run import Run, start_run
from .stages import collect, submit
from .step_data import (check_reward_failures, correct_only, learner_shards, rollout_metrics,
                        to_groups, update_metrics)

log = logging.getLogger(__name__)


@contextmanager
def timed(times: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    times[key] = times.get(key, 0.0) + time.perf_counter() - start


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
    t = run.cfg.trainer
    start = time.perf_counter()
    if run.step == 0:
        if run.needs_warmup:
            warmup(run)
        if t.eval_every:
            evaluate(run)  # the starting point every later evaluation is compared with
    run.start_state = run.driver_state()
    bar = tqdm(total=t.steps, initial=run.step, desc="steps", disable=not t.progress)
    while run.step < t.steps:
        try:
            out_of_time = advance(run, start)
        except Exception as err:  # a dead learner rank: recreate the group, restore, replay from there
            if not recover_learners(run, err):
                raise
            bar.n = run.step
            continue
        bar.update(1)
        if out_of_time:
            break
    bar.close()
    write_report(run, time.perf_counter() - start)


def advance(run: Run, start: float) -> bool:
    """One training step with its logging, evaluation and checkpoint; True when out of time."""
    t = run.cfg.trainer
    m = sft_step(run, run.step) if run.cfg.mode == "sft" else rl_step(run)
    run.step += 1
    run.metrics.log(run.step, m)
    log.info("step %d/%d %s", run.step, t.steps, ", ".join(f"{k} {m[k]:.3f}" for k in sorted(m) if k.endswith(
        ("reward_mean", "accuracy", "_s", "loss"))))
    out_of_time = t.max_wall_s is not None and time.perf_counter() - start >= t.max_wall_s
    if out_of_time:
        log.info("trainer.max_wall_s=%s reached after %d steps", t.max_wall_s, run.step)
    last = run.step == t.steps or out_of_time
    if t.eval_every and (run.step % t.eval_every == 0 or last):
        evaluate(run)
    if last or (t.checkpoint_every and run.step % t.checkpoint_every == 0):
        checkpoint(run)
    return out_of_time


def rl_step(run: Run) -> dict[str, float]:
    cfg, pools, t = run.cfg, run.pools, run.cfg.trainer
    overlap = cfg.async_.max_staleness == 1  # rollout of step k+1 runs while step k updates
    times: dict[str, float] = {}
    if run.job is None:
        sync(run, times)  # a no-op unless resumed: the previous step ended with a sync
    job = run.job or submit(pools, *run.next_prompts(), cfg.rollout)
    with timed(times, "rollout_s"):  # rewards are scored as shards come back
        trajs, scores = collect(pools, job, run.version, t.reward_chunk, t.progress)
    # Request order, not arrival order: what follows sums over them, and a replay must sum alike.
    order = {(r.uid, r.sample_idx): i for i, r in enumerate(job.records)}
    trajs.sort(key=lambda tr: order[(tr.prompt_uid, tr.sample_idx)])
    check_reward_failures(scores.values(), cfg.reward.max_failed_fraction, f"step {run.step + 1}")
    scores, judge_m = apply_rewards(cfg, pools.judge, run.tokenizer, job.rows, trajs, scores)  # no-op by default
    m = rollout_metrics(trajs, scores, times["rollout_s"], run.version) | judge_m
    m["reissued"] = float(sum(job.reissued.values()))
    run.job = run.job_cursor = None
    if overlap and run.step + 1 < t.steps:
        sync(run, times)  # workers take version k now and sample step k+1 while step k updates
        run.job = submit(pools, *run.next_prompts(), cfg.rollout)
    self_sft = cfg.algo.name == "sft_trace"  # supervised on this step's correct rollouts, as decoded
    with timed(times, "advantage_s"):
        adv = (correct_only(trajs, scores) if self_sft else
               weigh_outcome(cfg, group_advantages(to_groups(trajs, scores), cfg.algo.advantage)))
    m.update({f"dropped_groups/{k}": float(v) for k, v in adv.dropped.items()})
    if adv.skip_reason:
        log.warning("step %d: no update, %s", run.step, adv.skip_reason)
        m["skipped"] = 1.0
    else:
        if cfg.cluster.colocate:  # the learner shares their device: free it for the update
            with timed(times, "sleep_s"):  # (the sync after the update brings the weights back)
                m["rollout_freed_mb"] = sum(ray.get([w.sleep.remote() for w in pools.rollout])) / 2**20
        with timed(times, "update_s"):
            shards = learner_shards(adv.trajectories, adv.advantages, len(pools.learner))
            stats = ray.get([a.sft_trace_step.remote(tr, run.step) if self_sft else a.rl_step.remote(tr, ad, run.step)
                             for a, (tr, ad) in zip(pools.learner, shards)])[0]  # every rank: global figures
        run.version += 1
        m.update(update_metrics(stats, adv.trajectories, times["update_s"]))
    if not overlap:
        sync(run, times)
    return {**m, **times, "sync_s": times.get("sync_s", 0.0), "version": float(run.version)}


def sft_step(run: Run, step: int) -> dict[str, float]:
    """One supervised step on reference solutions (rollout workers catch up at the next sync)."""
    times: dict[str, float] = {}
    cfg = run.cfg
    pairs = run.next_pairs(cfg.trainer.prompts_per_step if cfg.mode == "sft" else cfg.warmup.prompts_per_step)
    with timed(times, "update_s"):
        n = len(run.pools.learner)
        stats = ray.get([a.sft_step.remote(pairs[r::n], step) for r, a in enumerate(run.pools.learner)])[0]
    run.version += 1
    return {**{f"learner/{k}": float(v) for k, v in stats.items()}, **times, "version": float(run.version)}


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
    run.needs_warmup = False
    run.base_path = str(run.warm_dir)  # a recreated learner group starts from here
    log.info("warm start cached at %s", run.warm_dir)


def sync(run: Run, times: dict[str, float]) -> None:
    """Bring every rollout worker to the learner's version (no-op when they already hold it)."""
    if run.synced != run.version:
        times["sync_s"] = times.get("sync_s", 0.0) + sync_weights(run.pools, run.version)
        run.synced = run.version


def evaluate(run: Run) -> dict[str, float]:
    """avg@k on the held-out rows with the eval sampling params (greedy by default)."""
    t = run.cfg.trainer
    sync(run, {})
    m, trajs, scores = decode_eval(run, run.cfg.eval_params(), t.eval_samples, "eval/", t.progress)
    check_reward_failures(scores.values(), run.cfg.reward.max_failed_fraction, f"evaluation at step {run.step}")
    run.metrics.log(run.step, m)
    log.info("eval at step %d: accuracy %.3f over %d samples", run.step, m["eval/accuracy"], len(trajs))
    return m
