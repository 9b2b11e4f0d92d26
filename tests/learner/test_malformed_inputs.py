"""Trajectories, rewards and advantages the learner must refuse, naming the trajectory (or prompt)
and the field, rather than train on misaligned rows or put NaN into the weights."""
import dataclasses
import math

import pytest
import torch

from helpers import MASK, tiny_model
from learner.advantages import AdvantageConfig, ScoredGroup, group_advantages
from learner.algo_config import AlgoConfig
from learner.engine import TrainEngine
from learner.engine_config import EngineConfig
from learner.policy_update import PolicyUpdater
from learner.value import step_ranks, token_rewards
from rollout.trajectory import Trajectory


def traj(response=(5, 6, 7, 8, 9, 1), steps=(1, 2, 2, 3, 3, 4), prompt=(2, 3, 4), **kw) -> Trajectory:
    n = len(response)
    return Trajectory(prompt_ids=list(prompt), response_ids=list(response), step_map=list(steps),
                      logprobs=[-1.0] * n, entropies=[0.5] * n, block_size=4, finish_reason="eos",
                      num_forwards=max(steps, default=0), prompt_uid="p7", sample_idx=3, **kw)


def updater(name: str = "tracerl", **algo) -> tuple[PolicyUpdater, list[torch.Tensor]]:
    model = tiny_model(4)
    up = PolicyUpdater(TrainEngine(model, EngineConfig(lr=1e-3)), AlgoConfig(name=name, **algo), model.config)
    return up, [p.detach().clone() for p in model.parameters()]


def unchanged(up: PolicyUpdater, before: list[torch.Tensor]) -> bool:
    return all(torch.equal(a, b) for a, b in zip(before, up.engine.module.parameters()))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_advantage_is_named_and_nothing_is_trained(bad):
    up, before = updater()
    with pytest.raises(ValueError, match=r"trajectory 1 \(p7/3\): advantage .*" + str(bad)):
        up.rl_step([traj(), traj()], [1.0, bad], 0)
    assert unchanged(up, before)  # was: NaN in every weight


def test_advantages_of_another_count_than_the_trajectories_are_named():
    up, before = updater()
    with pytest.raises(ValueError, match="1 advantages for 2 trajectories"):
        up.rl_step([traj(), traj()], [1.0], 0)
    assert unchanged(up, before)


@pytest.mark.parametrize("field, value, message", [
    ("step_map", [1, 1, 2, 3, 3, 4, 5], "7 step_map for 6 response_ids"),  # was: later rows shifted, silently
    ("step_map", [1, 1, 2, 3, 3], "5 step_map for 6 response_ids"),
    ("logprobs", [-1.0] * 3, "3 logprobs for 6 response_ids"),  # was: tis_cap read 0.0 for the rest
    ("entropies", [0.5] * 7, "7 entropies for 6 response_ids"),
    ("tail_steps", [4], "1 tail_steps for 2 tail_ids"),
    ("step_map", [-1, 1, 2, 3, 3, 4], "step_map steps are 1-based, got -1"),  # was: the prompt masked in its rows
    ("tail_steps", [4, 0], "tail_steps steps are 1-based, got 0"),
    ("response_ids", [5, MASK, 7, 8, 9, 1], "response_ids\\[1\\] is the mask token id 11"),  # was: NaN weights
    ("response_ids", [5, 6, 60, 8, 9, 1], "response_ids\\[2\\] = 60 is outside the vocabulary \\(12 ids\\)"),
    ("tail_ids", [1, -1], "tail_ids\\[1\\] = -1 is outside the vocabulary \\(12 ids\\)"),
    ("block_size", 0, "block_size 0"),
])
def test_a_malformed_trajectory_is_named_with_its_field(field, value, message):
    up, before = updater(tis_cap=2.0)
    bad = dataclasses.replace(traj(tail_ids=[1, 1], tail_steps=[4, 4]), **{field: value})
    with pytest.raises(ValueError, match=r"trajectory 1 \(p7/3\): " + message):
        up.rl_step([traj(), bad], [1.0, -1.0], 0)
    assert unchanged(up, before)


def test_sft_on_a_reference_holding_the_mask_id_names_it():
    up, before = updater("sft_semi_ar")
    with pytest.raises(ValueError, match=r"trajectory 0 \(/0\): response_ids\[1\] is the mask token id 11"):
        up.sft_step([([2, 3], [5, MASK, 1])], 0)  # was: loss inf
    assert unchanged(up, before)


@pytest.mark.parametrize("steps", [[1, 2, 2, 3, 4, 5], [5, 6, 1, 2, 3, 4]])  # block 1 reuses / precedes block 0's
def test_value_targets_name_blocks_whose_steps_are_not_in_block_order(steps):
    t = traj(prompt=[2, 3], steps=steps)  # blocks [2 3 5 6] [7 8 9 1]
    with pytest.raises(ValueError, match=r"trajectory p7/3: step_map steps of block 1 .* block 0's"):
        step_ranks(t, 1, MASK)  # was: a step shared by two blocks gave NaN returns (empty step ranks)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_process_reward_is_named(bad):
    t = traj(process_rewards=[0.0, 0.0, bad, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"trajectory p7/3: process_rewards\[2\] = " + str(bad)):
        token_rewards(t, torch.tensor(step_ranks(t, 1, MASK)), 1.0)  # was: NaN returns and advantages


def test_a_row_over_the_token_budget_names_the_config_key_and_its_trajectory():
    up, before = updater(token_budget=16)  # a round of a 40-token response: 40 clean + 43 noisy slots
    long = traj(response=[5] * 40, steps=list(range(1, 41)))
    with pytest.raises(ValueError, match=r"algo.token_budget=16 is smaller than the longest row \(83 tokens, of "
                                         r"trajectory 1\)"):  # was: learner.token_budget, no such key
        up.rl_step([traj(), long], [1.0, -1.0], 0)
    assert unchanged(up, before)


@pytest.mark.parametrize("bad", [math.nan, -math.inf])
def test_a_non_finite_reward_is_named_with_its_prompt(bad):
    g = ScoredGroup("p7", [traj(), traj(), traj()], [1.0, 0.0, bad], [True, False, False])
    with pytest.raises(ValueError, match=f"prompt p7: reward {bad} of sample 2 is not finite"):
        group_advantages([g], AdvantageConfig())  # was: the group kept with NaN advantages
