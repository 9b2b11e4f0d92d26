"""Trajectories and advantages the learner must refuse, naming the trajectory and the field, rather
than train on misaligned rows or put NaN into the weights."""
import math

import pytest
import torch

from helpers import tiny_model
from learner.algo_config import AlgoConfig
from learner.engine import TrainEngine
from learner.engine_config import EngineConfig
from learner.policy_update import PolicyUpdater
from rollout.trajectory import Trajectory


def traj(response=(5, 6, 7, 8, 9, 1), steps=(1, 1, 2, 3, 3, 4), prompt=(2, 3, 4), **kw) -> Trajectory:
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
