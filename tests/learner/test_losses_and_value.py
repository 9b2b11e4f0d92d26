"""Loss terms, normalisation, advantages and the value recursions on hand-computed numbers."""
import math

import pytest
import torch

from learner.advantages import AdvantageConfig, Filtered, ScoredGroup, group_advantages
from learner.losses import clipped_value_loss, k3_kl, ppo_clip, truncated_is_weight
from learner.value import outcome_rewards, token_targets
from rollout.trajectory import Trajectory


def test_ppo_clip_by_hand():
    logp = torch.log(torch.tensor([1.5, 0.5, 1.1, 0.7]))  # ratios against old = 0
    old = torch.zeros(4)
    adv = torch.tensor([1.0, 1.0, -2.0, -2.0])
    loss, clipped = ppo_clip(logp, old, adv, 0.2, 0.3)
    # A>0: min(ρA, clip(ρ)A): ρ=1.5 → 1.3 (clipped); ρ=0.5 → 0.5 (unclipped, min picks ρA).
    # A<0: ρ=1.1 → -2.2 (inside); ρ=0.7 → min(-1.4, -1.6) = -1.6 (clipped at 0.8).
    assert torch.allclose(loss, -torch.tensor([1.3, 0.5, -2.2, -1.6]))
    assert clipped.tolist() == [True, False, False, True]


def test_k3_kl_by_hand():
    logp, ref = torch.tensor([0.0, -1.0]), torch.tensor([0.0, -2.0])
    r = -1.0
    assert torch.allclose(k3_kl(logp, ref), torch.tensor([0.0, math.exp(r) - r - 1]))
    assert (k3_kl(torch.randn(100), torch.randn(100)) >= 0).all()


def test_truncated_is_weight_caps():
    w = truncated_is_weight(torch.tensor([0.0, 0.0]), torch.tensor([-0.1, -5.0]), 2.0)
    assert torch.allclose(w, torch.tensor([math.exp(0.1), 2.0]))


def test_clipped_value_loss_by_hand():
    v, old, ret = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]), torch.tensor([0.5, 1.0])
    # token 0: (1-.5)^2 vs (0+0.2-.5)^2 → max(.25, .09) = .25; token 1: (0-1)^2 both → 1
    assert torch.allclose(clipped_value_loss(v, old, ret, 0.2), torch.tensor([0.125, 0.5]))


def traj(finish="eos") -> Trajectory:
    return Trajectory([2], [3], [1], [0.0], [0.0], 4, finish, 1)


def test_group_advantages_population_std_and_filters():
    g = ScoredGroup("a", [traj() for _ in range(4)], [1.0, 0.0, 0.0, 1.0], [True, False, False, True])
    out = group_advantages([g], AdvantageConfig())
    assert out.advantages == pytest.approx([1.0, -1.0, -1.0, 1.0], abs=1e-5)  # std = 0.5 (population)
    one = ScoredGroup("c", [traj() for _ in range(4)], [0.0, 1.0, 0.0, 0.0], [False, True, False, False])
    assert group_advantages([one], AdvantageConfig(scale="none")).advantages == [-0.25, 0.75, -0.25, -0.25]
    flat = ScoredGroup("b", [traj(), traj()], [1.0, 1.0], [True, True])
    out = group_advantages([flat], AdvantageConfig())
    assert out.samples == [] and out.dropped == {"zero_advantage": 1}
    assert out.filtered == Filtered(responses=2, tokens=2)  # counted in the loss normalisation
    assert "zero_advantage: 1" in out.skip_reason
    kept = group_advantages([flat], AdvantageConfig(drop_zero_advantage=False))
    assert kept.advantages == [0.0, 0.0]
    band = group_advantages([g, flat], AdvantageConfig(acc_low=0.2, acc_high=0.8))
    assert band.dropped == {"accuracy_band": 1} and len(band.samples) == 4


def test_truncated_responses_can_be_forced_to_zero_reward():
    g = ScoredGroup("a", [traj("length"), traj("eos")], [1.0, 0.0], [True, False])
    out = group_advantages([g], AdvantageConfig(truncated_reward_zero=True))
    assert out.dropped == {"zero_advantage": 1}


def direct_loop(values, rewards, ranks, gamma, lam):
    """Textbook per-token loop over the step-level quantities, no vectorisation."""
    S = max(ranks) + 1
    r_star = [sum(r for r, k in zip(rewards, ranks) if k == s) / ranks.count(s) for s in range(S)]
    v_star = [sum(v for v, k in zip(values, ranks) if k == s) / ranks.count(s) for s in range(S)] + [0.0]
    R_star, A_star = [0.0] * (S + 1), [0.0] * (S + 1)
    for s in reversed(range(S)):
        R_star[s] = r_star[s] + gamma * R_star[s + 1]
        delta = r_star[s] - v_star[s] + gamma * v_star[s + 1]
        A_star[s] = delta + gamma * lam * A_star[s + 1]
    R = [r + gamma * R_star[k + 1] for r, k in zip(rewards, ranks)]
    A = [(r - v) + gamma * v_star[k + 1] + gamma * lam * A_star[k + 1] for r, v, k in zip(rewards, values, ranks)]
    return R, A


@pytest.mark.parametrize("gamma, lam", [(1.0, 1.0), (0.9, 0.95), (0.5, 0.0), (1.0, 0.5)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_value_recursions_match_direct_loop(gamma, lam, seed):
    g = torch.Generator().manual_seed(seed)
    n = 20
    ranks = torch.sort(torch.randint(0, 7, (n,), generator=g)).values
    ranks = torch.unique(ranks, return_inverse=True)[1]  # dense 0..S-1
    values = torch.randn(n, generator=g)
    rewards = torch.randn(n, generator=g)
    R, A = token_targets(values, rewards, ranks, gamma, lam)
    R_ref, A_ref = direct_loop(values.tolist(), rewards.tolist(), ranks.tolist(), gamma, lam)
    assert torch.allclose(R, torch.tensor(R_ref), atol=1e-5)
    assert torch.allclose(A, torch.tensor(A_ref), atol=1e-5)


def test_gamma_lambda_one_gives_advantage_minus_value():
    ranks = torch.tensor([0, 0, 1, 2, 2, 3])
    values = torch.tensor([0.1, -0.3, 0.5, 0.2, 0.0, -0.7])
    adv = 1.7
    R, A = token_targets(values, outcome_rewards(ranks, adv), ranks, 1.0, 1.0)
    assert torch.allclose(R, torch.full((6,), adv))
    assert torch.allclose(A, adv - values, atol=1e-6)


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean", "max_len"])
@pytest.mark.parametrize("filtered", [Filtered(), Filtered(responses=2, tokens=6)])
def test_normalisation_weights_by_hand(mode, filtered):
    """Two responses of 3 and 1 tokens, split over two micro-batches; the step loss Σ w·ℓ must equal
    the hand-computed normalisation whatever the split. With `filtered` (2 more sampled responses of
    6 tokens, left out of training), the denominators count them: 10 tokens, 4 responses."""
    from learner.batching import micro_batches
    from learner.policy_update import norm_weights
    from learner.rows import trace_rows

    t3 = Trajectory([2, 3, 4, 5], [6, 7, 8], [1, 2, 3], [0.0] * 3, [0.0] * 3, 4, "length", 3)
    t1 = Trajectory([2, 3, 4, 5], [6], [1], [0.0], [0.0], 4, "length", 1)
    rows = trace_rows(t3, 0, "block_causal", 1, 11) + trace_rows(t1, 1, "block_causal", 1, 11)
    mbs = micro_batches(rows, 12, 0)  # a small budget: several micro-batches
    assert len(mbs) > 1
    norm_weights(mbs, [t3, t1], mode, filtered)
    w = {(int(i), int(j)): float(x) for mb in mbs for i, j, x in zip(mb.traj_index, mb.token_index, mb.data["w"])}
    tokens, seqs = 4 + filtered.tokens, 2 + filtered.responses
    expected = {"token_mean": {k: 1 / tokens for k in w},
                "seq_mean": {k: 1 / (seqs * (3 if k[0] == 0 else 1)) for k in w},
                "max_len": {k: 1 / (seqs * 3) for k in w}}[mode]
    assert w == pytest.approx(expected)
