"""Dynamic sampling (actors/refill.py) on a constructed prompt stream, without a cluster: the step
draws rounds sized by the share kept so far until it has trainer.prompts_per_step groups with an
advantage, or algo.advantage.refill_rounds rounds, or that many batches' worth of prompts more; then
trains on the first that many."""
from __future__ import annotations

from collections import deque
from types import SimpleNamespace

import pytest

from actors.refill import batch_advantages, refill_size
from actors.rollout_group import RolloutJob
from actors.step_batch import StepBatch
from actors.step_metrics import batch_metrics
from actors.timer import StepTimer
from learner.advantages import Filtered
from rewards.result import Score
from rollout.params import SamplingParams
from rollout.trajectory_batch import RowMeta
from support import compose_config

HALF, ONE, RIGHT, WRONG = [1, 0, 1, 0], [0, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]
# Round 1 (4 prompts) keeps a and c; round 2 (4 = 2 missing / (2 of 4 kept)) adds h; round 3
# (3 = ceil(1 missing / (3 of 8 kept))) adds j and k, k beyond the 4 the step trains on.
STREAM = [("a", HALF), ("b", RIGHT), ("c", ONE), ("d", RIGHT), ("e", RIGHT), ("f", RIGHT), ("g", RIGHT),
          ("h", HALF), ("i", WRONG), ("j", ONE), ("k", HALF)]


def scored(groups: list[tuple[str, list[int]]]) -> StepBatch:
    rows = [RowMeta(uid, k, k, 5, 3, 1, 0, "eos") for uid, rs in groups for k in range(len(rs))]
    scores = {(uid, k): Score(uid, k, float(r), r == 1) for uid, rs in groups for k, r in enumerate(rs)}
    return StepBatch(rows, scores)


class Rollout:
    """The rollout group's `refill`: the next prompts of a constructed stream."""

    def __init__(self, stream: list[tuple[str, list[int]]]) -> None:
        self.stream, self.asked = deque(stream), []

    def refill(self, batch: StepBatch, prompts: int, step: int, timer: StepTimer) -> StepBatch:
        self.asked.append(prompts)
        return batch.extended(scored([self.stream.popleft() for _ in range(prompts)]))


def step(rounds: int) -> tuple[Rollout, StepBatch, object]:
    cfg = compose_config(["trainer.prompts_per_step=4", f"algo.advantage.refill_rounds={rounds}"])
    rollout = Rollout(STREAM[4:])
    run = SimpleNamespace(cfg=cfg, rollout=rollout, state=SimpleNamespace(step=0))
    return rollout, *batch_advantages(run, scored(STREAM[:4]), StepTimer())


def uids(adv) -> list[str]:
    return list(dict.fromkeys(m.prompt_uid for m in adv.samples))


def test_refill_rounds_fill_the_batch_and_train_on_the_first_groups_kept():
    rollout, batch, adv = step(rounds=3)
    assert rollout.asked == [4, 3] and not rollout.stream
    assert uids(adv) == ["a", "c", "h", "j"] and adv.filtered == Filtered()
    assert adv.dropped == {"zero_advantage": 6, "surplus": 1}
    assert adv.metrics["refill/rounds"] == 2 and adv.metrics["refill/prompts"] == 7
    assert adv.metrics["groups/zero_advantage_share"] == 6 / 11  # of every group drawn
    assert batch_metrics(batch, 0)["prompts"] == 11


def test_the_round_cap_leaves_a_short_batch_normalised_as_a_full_one():
    rollout, _, adv = step(rounds=1)
    assert rollout.asked == [4] and uids(adv) == ["a", "c", "h"]
    assert adv.filtered == Filtered(4, 12)  # b stands in for the missing group
    assert adv.metrics["refill/rounds"] == 1 and adv.metrics["refill/prompts"] == 4


def test_a_step_draws_at_most_refill_rounds_batches_more():
    # 1 group of 4 kept: the round would draw ceil(3 × 4 / 1) = 12, two rounds' worth allow 8, then none.
    rollout = Rollout([(f"r{i}", HALF) for i in range(12)])
    cfg = compose_config(["trainer.prompts_per_step=4", "algo.advantage.refill_rounds=2"])
    run = SimpleNamespace(cfg=cfg, rollout=rollout, state=SimpleNamespace(step=0))
    _, adv = batch_advantages(run, scored([("a", HALF), ("b", RIGHT), ("c", WRONG), ("d", RIGHT)]), StepTimer())
    assert rollout.asked == [8] and uids(adv) == ["a", "r0", "r1", "r2"]
    assert adv.metrics["refill/rounds"] == 1 and adv.metrics["refill/prompts"] == 8


def test_off_by_default():
    rollout, _, adv = step(rounds=0)
    assert rollout.asked == [] and uids(adv) == ["a", "c"] and adv.filtered == Filtered(8, 24)
    assert "refill/rounds" not in adv.metrics


@pytest.mark.parametrize("missing,drawn,kept,size", [(2, 4, 2, 4), (1, 8, 3, 3), (32, 32, 0, 32), (3, 32, 29, 4)])
def test_refill_size(missing, drawn, kept, size):
    assert refill_size(missing, drawn, kept) == size


def test_a_refill_round_joins_the_step_rollout_without_touching_the_batch_it_returned():
    """The StepBatch of a round holds its job's `rows` list itself: absorbing the next round's job
    must not add those rows to it a second time (the refill then trains on them twice)."""
    first, more = scored(STREAM[:4]), scored(STREAM[4:6])
    job = RolloutJob([], {"a": {}}, SamplingParams(), [], rows=first.rows)
    job.absorb(RolloutJob([], {"e": {}}, SamplingParams(), [], rows=more.rows))
    assert len(first.rows) == 16 and len(job.rows) == 24 and set(job.task_rows) == {"a", "e"}
    both = first.extended(more)
    assert len(both.rows) == 24 and len({m.key for m in both.rows}) == 24
