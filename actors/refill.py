"""Dynamic sampling (DAPO's; verl's `algorithm.filter_groups`), on the driver: a step whose
advantage filters leave fewer than trainer.prompts_per_step prompt groups draws more prompts,
decoded by the same weights, until it has that many, or algo.advantage.refill_rounds more rounds
were drawn, or refill_rounds × prompts_per_step more prompts (docs/design.md §6.1 step 5). Late in
a run most groups are all right and teach nothing; without this the batch, and with
algo.norm_over=sampled the update, shrinks with them."""
from __future__ import annotations

import math

from learner.advantages import AdvantageResult

from .run import Run
from .step_batch import StepBatch
from .timer import StepTimer


def refill_size(missing: int, drawn: int, kept: int) -> int:
    """Prompts for the next round: the missing groups over the share kept so far (none kept yet:
    as many as the first round)."""
    return drawn if kept == 0 else math.ceil(missing * drawn / kept)


def batch_advantages(run: Run, batch: StepBatch, timer: StepTimer) -> tuple[StepBatch, AdvantageResult]:
    """The step's advantages, refilling the batch first while groups are missing (refill_rounds > 0);
    with refilling, `refill/rounds` and `refill/prompts` (prompts drawn beyond the first round).
    A round's size extrapolates from the share kept so far, and the step's extra prompts are capped
    at refill_rounds batches' worth (what verl's max_num_gen_batches allows): when nearly every
    group is all right, extrapolating alone drew 30x the batch (~10x the step's decoding)."""
    cfg = run.cfg
    rounds_left = cfg.algo.advantage.refill_rounds
    target = cfg.trainer.prompts_per_step if rounds_left else None
    with timer("advantage_s"):
        adv = batch.advantages(cfg.algo, cfg.reward, target)
    if target is None:
        return batch, adv
    drawn = first = len({m.prompt_uid for m in batch.rows})
    budget = rounds_left * first
    while rounds_left and budget and (kept := len({m.prompt_uid for m in adv.samples})) < target:
        more = min(refill_size(target - kept, drawn, kept), budget)
        batch = run.rollout.refill(batch, more, run.state.step, timer)
        drawn, rounds_left, budget = drawn + more, rounds_left - 1, budget - more
        with timer("advantage_s"):
            adv = batch.advantages(cfg.algo, cfg.reward, target)
    used = cfg.algo.advantage.refill_rounds - rounds_left
    adv.metrics |= {"refill/rounds": float(used), "refill/prompts": float(drawn - first)}
    return batch, adv
