"""The per-step figures an RL user watches, each checked against a hand computation on a
constructed batch: group shares and advantage statistics, KL to the frozen start, and the value
model's explained variance."""
import copy
import math
from types import SimpleNamespace

import pytest
import torch

from helpers import params, prompts_mixed, tiny_model
from learner.advantages import AdvantageConfig, Filtered, ScoredGroup, group_advantages
from learner.algo_config import AlgoConfig
from learner.batching import micro_batches
from learner.engine import TrainEngine
from learner.engine_config import EngineConfig
from learner.logprobs import token_logprobs
from learner.losses import k3_kl
from learner.policy_update import PolicyUpdater, explained_variance
from learner.rows import trace_rows
from rollout.sampler import generate


def group(uid: str, rewards: list[float]) -> ScoredGroup:
    samples = [SimpleNamespace(finish_reason="eos", response_len=3, uid=uid, k=k) for k in range(len(rewards))]
    return ScoredGroup(uid, samples, rewards, [r == 1.0 for r in rewards])


def test_group_shares_and_advantage_statistics():
    groups = [group("right", [1, 1, 1, 1]), group("wrong", [0, 0, 0, 0]), group("half", [1, 0, 1, 0]),
              group("one", [1, 0, 0, 0])]
    m = group_advantages(groups, AdvantageConfig()).metrics
    assert m["groups/all_correct_share"] == 0.25 and m["groups/all_wrong_share"] == 0.25
    assert m["groups/zero_advantage_share"] == 0.5 and m["groups/kept_share"] == 0.5
    assert group_advantages(groups, AdvantageConfig()).filtered == Filtered(responses=8, tokens=24)
    # half: ±1 (std 0.5); one: (1 - 0.25) / sqrt(3)/4 = +sqrt(3), the others -1/sqrt(3)
    kept = [1, -1, 1, -1, math.sqrt(3)] + [-1 / math.sqrt(3)] * 3
    mean = sum(kept) / 8
    assert m["advantage/mean"] == pytest.approx(mean, abs=1e-6)  # each group sums to 0
    assert m["advantage/std"] == pytest.approx(math.sqrt(sum((a - mean) ** 2 for a in kept) / 8), abs=1e-5)
    assert m["advantage/abs_mean"] == pytest.approx(sum(map(abs, kept)) / 8, abs=1e-5)


def test_a_target_trains_the_first_kept_groups_and_counts_stand_ins_for_missing_ones():
    """Dynamic sampling's batch: at most `target` kept groups (later ones "surplus"); the filtered
    groups counted in the normalisation are the first ones, as many as kept groups are missing."""
    groups = [group("right", [1, 1, 1, 1]), group("half", [1, 0, 1, 0]), group("wrong", [0, 0, 0, 0]),
              group("one", [1, 0, 0, 0]), group("half2", [0, 1, 0, 1]), group("one2", [0, 0, 0, 1])]
    two = group_advantages(groups, AdvantageConfig(), target=2)
    assert [s.uid for s in two.samples] == ["half"] * 4 + ["one"] * 4
    assert two.dropped == {"zero_advantage": 2, "surplus": 2} and two.filtered == Filtered()
    assert two.metrics["groups/zero_advantage_share"] == 2 / 6
    assert two.metrics["groups/kept_share"] == pytest.approx(2 / 6)
    assert [s.uid for s in group_advantages(groups, AdvantageConfig(), target=3).samples][-4:] == ["half2"] * 4
    for target, stand_ins in ((4, Filtered()), (5, Filtered(4, 12)), (6, Filtered(8, 24)), (None, Filtered(8, 24))):
        out = group_advantages(groups, AdvantageConfig(), target=target)
        assert out.filtered == stand_ins and len(out.samples) == 16 and "surplus" not in out.dropped
    # Advantages of a kept group do not depend on the target.
    assert two.advantages == group_advantages(groups, AdvantageConfig()).advantages[:8]


def test_explained_variance_of_constructed_values():
    def mb(returns: list[float], values: list[float]) -> SimpleNamespace:
        return SimpleNamespace(data={"returns": torch.tensor(returns), "old_values": torch.tensor(values)})

    mbs = [mb([1.0, -1.0, 1.0], [0.5, -0.5, 1.0]), mb([-1.0], [0.0])]
    R = torch.tensor([1.0, -1.0, 1.0, -1.0])
    err = R - torch.tensor([0.5, -0.5, 1.0, 0.0])
    want = 1 - err.var(unbiased=False) / R.var(unbiased=False)
    assert explained_variance(mbs) == pytest.approx(float(want), abs=1e-12)
    perfect = [SimpleNamespace(data={"returns": R, "old_values": R.clone()})]
    assert explained_variance(perfect) == 1.0
    assert explained_variance([SimpleNamespace(data={"returns": R, "old_values": torch.zeros(4)})]) == 0.0


@pytest.fixture(scope="module")
def batch():
    model = tiny_model(4, sharpen=1.0)
    trajs = generate(model, prompts_mixed(4) * 2, params(max_new_tokens=12), seeds=list(range(8)))
    return model, trajs


def test_ref_kl_is_the_k3_mean_against_the_frozen_model(batch):
    start, trajs = batch
    adv = [1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 0.25, -0.75]
    same = PolicyUpdater(TrainEngine(copy.deepcopy(start), EngineConfig(lr=1e-3)), AlgoConfig(), start.config,
                         ref_model=copy.deepcopy(start))
    assert same.rl_step(trajs, adv, 0)["ref_kl"] == 0.0  # the policy is its own reference before the update
    ref = tiny_model(4, sharpen=1.0, seed=1)  # another model: a KL a hand computation can check
    policy = copy.deepcopy(start)
    rows = [r for i, t in enumerate(trajs) for r in trace_rows(t, i, "block_causal", 1, start.config.mask_token_id)]
    with torch.no_grad():
        lp, rp = [], []
        for mb in micro_batches(rows, 16384, start.config.pad_token_id):
            lp.append(token_logprobs(policy, mb, start.config.mask_token_id)[0])
            rp.append(token_logprobs(ref, mb, start.config.mask_token_id)[0])
    want = float(k3_kl(torch.cat(lp), torch.cat(rp)).mean())
    updater = PolicyUpdater(TrainEngine(policy, EngineConfig(lr=1e-3)), AlgoConfig(), start.config, ref_model=ref)
    got = updater.rl_step(trajs, adv, 0)["ref_kl"]
    assert want > 0.01 and got == pytest.approx(want, rel=1e-4)
