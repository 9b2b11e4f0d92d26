"""The reward route without a cluster: a reward worker's rules (outcome and process) answer one
ResponseScore per row with a timeout for each, and the step's rewards combine them — per-chunk
process scores carried with the advantages for the value model (placed on tokens by the learner
rank), the weighted sum otherwise, nothing by default."""
from __future__ import annotations

import time

import pytest

from actors.learner_worker import place_process_rewards
from actors.reward_route import step_rewards
from actors.reward_worker import RewardWorker
from actors.step_batch import StepBatch
from actors.step_metrics import reward_metrics
from models.tiny import write_tiny_checkpoint
from models.tokenizer import build_tiny_tokenizer
from rewards.contract import ScoreParts
from rewards.process import process_vector
from rewards.result import Score
from rollout.trajectory import Trajectory
from rollout.trajectory_batch import TrajectoryBatch
from support import compose_config

TOK = build_tiny_tokenizer()
ROW = {"question": "47+85=", "ground_truth_answer": "132"}
# 16 tokens in chunks of 4; the worked answer is in chunk 0: "231" scores 3/3, "291" (+1 -1 +1)/3
CHUNKS = {0: [1.0, 0.0, 0.0, 0.0], 1: [1 / 3, 0.0, 0.0, 0.0]}


def trajectories() -> list[Trajectory]:
    """"231 \\boxed{132}" (right) and "291 \\boxed{192}" (second digit wrong), prompt of 6 tokens."""
    out = []
    for k, text in enumerate(["231 \\boxed{132}", "291 \\boxed{192}"]):
        ids = TOK.encode(text, add_special_tokens=False) + [TOK.eos_token_id]
        steps = [1 + j for j in range(len(ids))]  # one token per step
        out.append(Trajectory([7] * 6, ids, steps, [0.0] * len(ids), [0.0] * len(ids), 4, "eos", len(ids),
                              prompt_uid="a", sample_idx=k))
    return out


def rows():
    return TrajectoryBatch.from_trajectories(trajectories()).metas()


def scores() -> dict:
    return {("a", 0): Score("a", 0, 1.0, True), ("a", 1): Score("a", 1, 0.0, False)}


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> str:
    return str(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny")))


def test_a_reward_worker_scores_outcome_and_rule_process_from_the_batch(tiny_path):
    worker = RewardWorker(0, tiny_path, "tasks.builtin.arith:reward", "tasks.builtin.arith:process_reward",
                          chunk_tokens=4)
    batch = TrajectoryBatch.from_trajectories(trajectories())
    answers = worker.score(batch, [1, 0], [ROW, ROW], ScoreParts(outcome=True, process=True))
    assert [a.key for a in answers] == [("a", 1), ("a", 0)]
    assert [(a.outcome.reward, a.outcome.correct) for a in answers] == [(0.0, False), (1.0, True)]
    assert [a.process.scores for a in answers] == [CHUNKS[1], CHUNKS[0]]
    only = worker.score(batch, [0], [ROW], ScoreParts(process=True))
    assert only[0].outcome is None and only[0].process.scores == CHUNKS[0]


def test_a_hung_rule_process_reward_costs_its_timeout_not_the_step(tiny_path):
    worker = RewardWorker(0, tiny_path, "tasks.builtin.arith:reward", "tests.actors.broken_reward:hanging_process",
                          chunk_tokens=4, timeout_s=0.5)
    batch = TrajectoryBatch.from_trajectories(trajectories())
    start = time.monotonic()
    answers = worker.score(batch, [0, 1], [{**ROW, "mode": "hang"}, ROW], ScoreParts(process=True))
    assert time.monotonic() - start < 5.0
    assert answers[0].process.scores == [0.0] * 4 and answers[0].process.failures[0].startswith("timeout")
    assert answers[1].process.scores == [1.0] * 4 and not answers[1].process.failures


def test_default_reward_is_untouched():
    cfg = compose_config([])
    out, chunks = step_rewards(cfg.reward, cfg.algo.uses_value, rows(), scores(), {})
    assert out == scores() and chunks == {} and reward_metrics(cfg.reward, rows(), scores(), {}) == {}


def _process(tiny_path: str) -> dict:
    worker = RewardWorker(0, tiny_path, "tasks.builtin.arith:reward", "tasks.builtin.arith:process_reward",
                          chunk_tokens=4)
    answers = worker.score(TrajectoryBatch.from_trajectories(trajectories()), [0, 1], [ROW, ROW],
                           ScoreParts(process=True))
    return {a.key: a.process for a in answers}


def test_value_model_gets_chunk_scores_placed_and_weighted_on_the_learner(tiny_path):
    cfg = compose_config(["algo=tracerl_value", "reward=arith_process", "reward.process_weight=0.5",
                          "reward.outcome_weight=2.0"])
    process = _process(tiny_path)
    out, chunks = step_rewards(cfg.reward, cfg.algo.uses_value, rows(), scores(), process)
    m = reward_metrics(cfg.reward, rows(), scores(), process)
    assert out == scores()  # the outcome reward stays the group advantage's input
    assert chunks == {("a", k): CHUNKS[k] for k in (0, 1)}
    assert m["process/reward_mean"] == pytest.approx((1.0 + 1 / 3) / 8) and m["judge/failures"] == 0
    adv = StepBatch(rows()[::-1], out, chunks).advantages(cfg.algo, cfg.reward)
    assert adv.advantages == pytest.approx([2.0, -2.0], rel=1e-5)  # the outcome's share: (±1) × outcome_weight
    assert adv.process_rewards == [chunks[m.key] for m in adv.samples]
    for t in trajectories():  # what a learner rank trains the value model on
        want = [0.5 * x for x in process_vector(t.step_map, 6, 4, False, 4, CHUNKS[t.sample_idx])]
        assert place_process_rewards(t, chunks[(t.prompt_uid, t.sample_idx)], cfg.reward) == pytest.approx(want)


def test_without_value_model_the_reward_is_the_weighted_sum(tiny_path):
    cfg = compose_config(["algo=tracerl", "reward=arith_process", "reward.process_weight=0.5",
                          "reward.outcome_weight=2.0"])
    out, chunks = step_rewards(cfg.reward, cfg.algo.uses_value, rows(), scores(), _process(tiny_path))
    assert out[("a", 0)].reward == pytest.approx(2.0 * 1.0 + 0.5 * 1.0)
    assert out[("a", 1)].reward == pytest.approx(2.0 * 0.0 + 0.5 / 3)
    assert out[("a", 1)].correct is False and chunks == {}
    adv = StepBatch(rows(), out, chunks).advantages(cfg.algo, cfg.reward)
    assert adv.advantages == pytest.approx([1.0, -1.0], rel=1e-5) and adv.process_rewards is None


def test_a_value_model_on_the_raw_reward_gets_the_kept_samples_rewards_not_their_advantages():
    upstream = compose_config(["algo=tracerl_value"])
    adv = StepBatch(rows()[::-1], scores()).advantages(upstream.algo, upstream.reward)
    assert adv.advantages == pytest.approx([1.0, -1.0], rel=1e-5)  # the group-normalised Â
    cfg = compose_config(["algo=tracerl_value", "algo.value.outcome=reward"])
    adv = StepBatch(rows()[::-1], scores()).advantages(cfg.algo, cfg.reward)
    assert [s.key for s in adv.samples] == [("a", 0), ("a", 1)] and adv.advantages == [1.0, 0.0]
    assert adv.metrics["advantage/abs_mean"] == pytest.approx(1.0, rel=1e-5)  # the metrics still show Â
    same = {**scores(), ("a", 1): Score("a", 1, 1.0, True)}  # an all-right group is still dropped
    assert StepBatch(rows(), same).advantages(cfg.algo, cfg.reward).samples == []
