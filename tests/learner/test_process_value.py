"""Value targets with process rewards: the learner's path (step ranks → token rewards → recursions)
equals a direct loop over the step map for random step maps, γ and λ; with only the outcome reward
it equals today's outcome-only targets, also through PolicyUpdater's value update."""

import random

import pytest
import torch

from helpers import params, prompts_mixed, tiny_model
from learner.algo_config import AlgoConfig, ValueConfig
from learner.engine import TrainEngine
from learner.engine_config import EngineConfig
from learner.policy_update import PolicyUpdater
from learner.value import ValueModel, outcome_rewards, step_ranks, token_rewards, token_targets
from rewards.process import chunk_ends, process_vector
from rollout.sampler import generate
from rollout.trajectory import Trajectory


def random_trajectory(rng: random.Random) -> Trajectory:
    B, P, L = rng.choice([2, 4]), rng.randint(1, 6), rng.randint(1, 14)
    step_map, step = [], 0
    for b in range(P // B, (P + L - 1) // B + 1):
        n = sum(1 for j in range(L) if (P + j) // B == b)
        steps = [step + rng.randint(1, n) for _ in range(n)]
        rng.shuffle(steps)
        step_map += steps
        step = max(steps)
    return Trajectory([5] * P, [7] * L, step_map, [0.0] * L, [0.0] * L, B, "eos", step)


def direct_targets(step_map, values, rewards, gamma, lam):
    """Per response: its distinct steps in order; step means; the recursions by plain loops."""
    order = sorted(set(step_map))
    S = len(order)
    r_star = [sum(r for r, s in zip(rewards, step_map) if s == t) / step_map.count(t) for t in order]
    v_star = [sum(v for v, s in zip(values, step_map) if s == t) / step_map.count(t) for t in order] + [0.0]
    R_star, A_star = [0.0] * (S + 1), [0.0] * (S + 1)
    for k in reversed(range(S)):
        R_star[k] = r_star[k] + gamma * R_star[k + 1]
        A_star[k] = r_star[k] - v_star[k] + gamma * v_star[k + 1] + gamma * lam * A_star[k + 1]
    R, A = [], []
    for r, v, s in zip(rewards, values, step_map):
        k = order.index(s)
        R.append(r + gamma * R_star[k + 1])
        A.append(r - v + gamma * v_star[k + 1] + gamma * lam * A_star[k + 1])
    return R, A


@pytest.mark.parametrize("seed", range(12))
def test_process_targets_equal_a_direct_loop(seed):
    rng = random.Random(seed)
    t = random_trajectory(rng)
    gamma, lam, chunk, adv = (
        rng.choice([1.0, 0.9, 0.5]),
        rng.choice([1.0, 0.95, 0.0]),
        rng.randint(1, 5),
        rng.gauss(0, 1),
    )
    scores = [rng.uniform(-1, 1) for _ in chunk_ends(len(t.step_map), chunk)]
    t.process_rewards = process_vector(t.step_map, len(t.prompt_ids), t.block_size, False, chunk, scores)
    ranks = torch.tensor(step_ranks(t, 1, 11))
    values = torch.randn(len(t.step_map), generator=torch.Generator().manual_seed(seed))
    R, A = token_targets(values, token_rewards(t, ranks, adv), ranks, gamma, lam)
    last = max(t.step_map)
    rewards = [p + (adv if s == last else 0.0) for p, s in zip(t.process_rewards, t.step_map)]
    R_ref, A_ref = direct_targets(t.step_map, values.tolist(), rewards, gamma, lam)
    assert R.tolist() == pytest.approx(R_ref, abs=1e-5)
    assert A.tolist() == pytest.approx(A_ref, abs=1e-5)
    if any(scores):  # the process rewards really change the targets
        R0, _ = token_targets(values, outcome_rewards(ranks, adv), ranks, gamma, lam)
        assert not torch.allclose(R, R0)


def test_outcome_only_is_todays_reward_vector():
    t = random_trajectory(random.Random(0))
    ranks = torch.tensor(step_ranks(t, 1, 11))
    assert torch.equal(token_rewards(t, ranks, 0.7), outcome_rewards(ranks, 0.7))
    t.process_rewards = [0.0] * (len(t.response_ids) + 1)
    with pytest.raises(ValueError, match=f"{len(t.response_ids) + 1} process rewards for"):
        token_rewards(t, ranks, 0.7)


def _value_update_targets(trajs, advantages, seed=0):
    """PolicyUpdater's returns/advantages per (trajectory, token) after its value step."""
    torch.manual_seed(seed)
    model, value = tiny_model(4), ValueModel(tiny_model(4, seed=1))
    with torch.no_grad():  # a non-zero value head, so V_j enters the targets
        value.value_head.weight.normal_(0, 0.1)
    algo = AlgoConfig(name="tracerl_value", value=ValueConfig(gamma=0.9, lam=0.8, train_every=2))
    updater = PolicyUpdater(
        TrainEngine(model, EngineConfig(lr=1e-3)),
        algo,
        model.config,
        value_engine=TrainEngine(value, EngineConfig(lr=1e-3)),
    )
    mbs = updater._micro_batches(algo.objective.rows(trajs, algo, model.config, torch.Generator().manual_seed(0)))
    updater._value_update(mbs, trajs, advantages, step=1)  # odd step: targets only, no value update
    out = {}
    for mb in mbs:
        for i, j, R, A in zip(
            mb.traj_index.tolist(), mb.token_index.tolist(), mb.data["returns"].tolist(), mb.data["adv"].tolist()
        ):
            out[(i, j)] = (R, A)
    return out


def test_value_update_with_zero_process_rewards_equals_outcome_only():
    model = tiny_model(4)
    trajs = generate(model, prompts_mixed(4), params(max_new_tokens=12), seeds=[0, 1, 2, 3])
    adv = [1.0, -1.0, 0.5, -0.5]
    today = _value_update_targets(trajs, adv)
    for t in trajs:
        t.process_rewards = [0.0] * len(t.response_ids)
    assert _value_update_targets(trajs, adv) == today
    for t in trajs:
        t.process_rewards = process_vector(
            t.step_map, len(t.prompt_ids), t.block_size, False, 3, [0.5] * len(chunk_ends(len(t.step_map), 3))
        )
    changed = _value_update_targets(trajs, adv)
    assert changed.keys() == today.keys() and changed != today
