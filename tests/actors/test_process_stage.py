"""apply_rewards without a cluster (rule process reward): per-token process rewards carried with
the advantages for the value model, the weighted sum otherwise; nothing changes by default (and
the trajectories are not even fetched)."""
from __future__ import annotations

import pytest

from actors.process_stage import apply_rewards, weigh_outcome
from learner.advantages import AdvantageResult
from models.tokenizer import build_tiny_tokenizer
from rewards.process import process_vector
from rewards.result import Score
from rollout.trajectory import Trajectory
from support import compose_config

TOK = build_tiny_tokenizer()
ROWS = {"a": {"question": "47+85=", "ground_truth_answer": "132"}}


def trajectories() -> list[Trajectory]:
    """"231 \\boxed{132}" (right) and "291 \\boxed{192}" (second digit wrong), prompt of 6 tokens."""
    out = []
    for k, text in enumerate(["231 \\boxed{132}", "291 \\boxed{192}"]):
        ids = TOK.encode(text, add_special_tokens=False) + [TOK.eos_token_id]
        steps = [1 + j for j in range(len(ids))]  # one token per step
        out.append(Trajectory([7] * 6, ids, steps, [0.0] * len(ids), [0.0] * len(ids), 4, "eos", len(ids),
                              prompt_uid="a", sample_idx=k))
    return out


def scores() -> dict:
    return {("a", 0): Score("a", 0, 1.0, True), ("a", 1): Score("a", 1, 0.0, False)}


def not_fetched() -> list[Trajectory]:
    raise AssertionError("the default reward fetched the trajectories")


def test_default_reward_is_untouched():
    cfg = compose_config([])
    out, per_token, m = apply_rewards(cfg, [], TOK, ROWS, not_fetched, scores())
    assert out == scores() and m == {} and per_token == {}


def test_value_model_gets_placed_weighted_process_rewards():
    trajs = trajectories()
    cfg = compose_config(["algo=tracerl_value", "reward=arith_process", "reward.process_weight=0.5",
                          "reward.outcome_weight=2.0"])
    out, per_token, m = apply_rewards(cfg, [], TOK, ROWS, lambda: trajs, scores())
    assert out == scores()  # the outcome reward stays the group advantage's input
    # 16 tokens in chunks of 4; the worked answer is in chunk 0: "231" scores 3/3, "291" (+1 -1 +1)/3
    chunk_scores = {0: [1.0, 0.0, 0.0, 0.0], 1: [1 / 3, 0.0, 0.0, 0.0]}
    for k, t in enumerate(trajs):
        want = process_vector(t.step_map, 6, 4, False, 4, chunk_scores[k])
        assert per_token[("a", k)] == pytest.approx([0.5 * x for x in want])
    assert m["process/reward_mean"] == pytest.approx((1.0 + 1 / 3) / 8) and m["judge/failures"] == 0
    adv = weigh_outcome(cfg, AdvantageResult(trajs[::-1], [1.0, -1.0]), per_token)
    assert adv.advantages == [2.0, -2.0] and adv.process_rewards == [per_token[("a", 1)], per_token[("a", 0)]]


def test_without_value_model_the_reward_is_the_weighted_sum():
    trajs = trajectories()
    cfg = compose_config(["algo=tracerl", "reward=arith_process", "reward.process_weight=0.5",
                          "reward.outcome_weight=2.0"])
    out, per_token, _ = apply_rewards(cfg, [], TOK, ROWS, lambda: trajs, scores())
    assert out[("a", 0)].reward == pytest.approx(2.0 * 1.0 + 0.5 * 1.0)
    assert out[("a", 1)].reward == pytest.approx(2.0 * 0.0 + 0.5 / 3)
    assert out[("a", 1)].correct is False and per_token == {}
    adv = weigh_outcome(cfg, AdvantageResult(trajs, [1.0, -1.0]), per_token)
    assert adv.advantages == [1.0, -1.0] and adv.process_rewards is None
