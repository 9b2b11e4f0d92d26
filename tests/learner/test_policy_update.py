"""The policy updater with the real engine: TraceRL moves likelihoods the right way; every
objective and the value path run through one optimizer step."""
import pytest
import torch

from helpers import MASK, PAD, params, prompts_mixed, tiny_model
from learner.algo_config import SFT_KNOBS, AlgoConfig
from learner.batching import micro_batches
from learner.engine import TrainEngine
from learner.engine_config import EngineConfig
from learner.logprobs import token_logprobs
from learner.objectives import OBJECTIVES, REFERENCE_SFT
from learner.policy_update import PolicyUpdater
from learner.rows import trace_rows
from learner.value import ValueModel
from rollout.sampler import generate

RL_ALGOS = [n for n, o in OBJECTIVES.items() if o.supervised_on is None]  # advantages from rollouts
SFT_ALGOS = [n for n, o in OBJECTIVES.items() if o.supervised_on is not None]


def sequence_logprobs(model, trajs) -> torch.Tensor:
    """Σ log-prob of each trajectory's committed tokens in their recorded contexts."""
    rows = [r for i, t in enumerate(trajs) for r in trace_rows(t, i, "block_causal", 1, MASK)]
    total = torch.zeros(len(trajs))
    with torch.no_grad():
        for mb in micro_batches(rows, 4096, PAD):
            lp, _ = token_logprobs(model, mb, MASK)
            total.index_add_(0, mb.traj_index, lp)
    return total


def test_thirty_tracerl_updates_raise_positive_and_lower_negative_responses():
    # An unsharpened model: responses are diverse and far from certain, so both directions can move.
    model = tiny_model(4, sharpen=1.0)
    trajs = generate(model, prompts_mixed(4) * 2, params(max_new_tokens=16), seeds=list(range(8)))
    advantages = [1.0] * 4 + [-1.0] * 4  # each prompt has one better and one worse sample
    before = sequence_logprobs(model, trajs)
    engine = TrainEngine(model, EngineConfig(lr=1e-3))
    updater = PolicyUpdater(engine, AlgoConfig(name="tracerl"), model.config)
    for step in range(30):
        metrics = updater.rl_step(trajs, advantages, step)
    after = sequence_logprobs(model, trajs)
    delta = after - before
    assert (delta[:4] > 0).all(), delta  # positive advantage: more likely
    assert (delta[4:] < 0).all(), delta  # negative advantage: less likely
    assert metrics["trained_tokens"] == sum(len(t.response_ids) for t in trajs)


@pytest.mark.parametrize("name", RL_ALGOS)
def test_every_rl_objective_takes_a_finite_step(name):
    model = tiny_model(4)
    trajs = generate(model, prompts_mixed(4), params(max_new_tokens=12), seeds=[0, 1, 2, 3])
    value_engine = TrainEngine(ValueModel(tiny_model(4)), EngineConfig(lr=1e-3)) if name == "tracerl_value" else None
    engine = TrainEngine(model, EngineConfig(lr=1e-3))
    updater = PolicyUpdater(engine, AlgoConfig(name=name, kl_beta=0.01, ppo_epochs=2), model.config,
                            value_engine=value_engine)
    before = [p.detach().clone() for p in model.parameters()]
    metrics = updater.rl_step(trajs, [1.0, -1.0, 0.5, -0.5], 0)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    if name == "tracerl_value":  # V starts at 0, returns are ±Â: loss ½·mean(Â²) over tokens
        assert metrics["value_loss"] > 0 and "value_grad_norm" in metrics
        assert metrics["value_explained_var"] == 0.0  # V = 0 explains none of the returns' variance


@pytest.mark.parametrize("name", SFT_ALGOS)
def test_sft_objectives_lower_their_loss(name):
    model = tiny_model(4)
    pairs = [([2, 3, 4, 5, 6], [7, 8, 9, 1]), ([3, 4, 5], [6, 7, 8, 9, 10, 1])]
    updater = PolicyUpdater(TrainEngine(model, EngineConfig(lr=3e-3)), AlgoConfig(name=name), model.config)
    first = updater.sft_step(pairs, 0)["sft_loss"]
    for step in range(1, 40):
        last = updater.sft_step(pairs, step)["sft_loss"]
    assert last < first


class _Reads:
    """An AlgoConfig that records which of its fields are read (its derived properties count as
    reads of the name)."""
    DERIVED = {"objective": "name", "uses_value": "name"}

    def __init__(self, algo: AlgoConfig) -> None:
        self.algo, self.read = algo, set()

    def __getattr__(self, key: str):
        self.read.add(self.DERIVED.get(key, key))
        return getattr(self.algo, key)


@pytest.mark.parametrize("name", REFERENCE_SFT)  # what warmup.algo may be
def test_sft_reads_only_the_knobs_a_warm_start_is_cached_by(name):
    model = tiny_model(4)
    algo = _Reads(AlgoConfig(name=name))
    updater = PolicyUpdater(TrainEngine(model, EngineConfig(lr=3e-3)), algo, model.config)
    algo.read.clear()  # the constructor's checks of RL knobs are not SFT's reads
    updater.sft_step([([2, 3, 4, 5, 6], [7, 8, 9, 1])], 0)
    assert {"name", "mask_ratio"} <= algo.read <= SFT_KNOBS, algo.read  # actors/modes.py hashes SFT_KNOBS


def test_an_empty_shard_is_a_zero_weight_step_not_an_error():
    model = tiny_model(4)
    updater = PolicyUpdater(TrainEngine(model, EngineConfig(lr=1e-3)), AlgoConfig(name="tracerl"), model.config)
    before = [p.detach().clone() for p in model.parameters()]
    metrics = updater.rl_step([], [], 0)
    assert metrics["rows"] == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_missing_value_engine_or_reference_is_named():
    model = tiny_model(4)
    engine = TrainEngine(model, EngineConfig())
    with pytest.raises(ValueError, match="tracerl_value needs a value engine"):
        PolicyUpdater(engine, AlgoConfig(name="tracerl_value"), model.config)
    with pytest.raises(ValueError, match="kl_ref=frozen"):
        PolicyUpdater(engine, AlgoConfig(kl_beta=0.1, kl_ref="frozen"), model.config)
