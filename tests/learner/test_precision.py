"""bf16 on a CPU stands in for a GPU learner: the precision rules a GPU run relies on are checked here.

- A model loaded in bf16 (every real checkpoint's dtype) trains fp32 master weights: at lr 1e-6
  AdamW moves each weight by ~1e-6, far below a bf16 weight's rounding step (~1e-4 at 0.02), so
  updates applied to bf16 weights would mostly round away.
- Old log-probs (and old values) are computed in the training forward's precision, so before any
  update the importance ratio is exactly 1 and no on-policy token is clipped.
- The value head follows its backbone's dtype, and a tracerl_value step runs with bf16 compute.
- The same holds on image prompts: the tower and projector run under the learner's autocast as well.
"""
import copy

import pytest
import torch

from engine_workers import engine_cfg, full_batch, loss_fn, make_model
from helpers import params, prompts_mixed, sampled_image_rollouts, tiny_model, tiny_vlm
from learner.algo_config import AlgoConfig
from learner.batching import micro_batches
from learner.engine import TrainEngine
from learner.engine_config import EngineConfig
from learner.policy_update import PolicyUpdater
from learner.rows import trace_rows
from learner.value import ValueModel
from rollout.sampler import generate


def deltas(compute: str, loaded: torch.dtype, steps: int = 4) -> dict[str, torch.Tensor]:
    """Weight change after `steps` AdamW steps at lr 1e-6 from the same bf16-representable start."""
    model = make_model().to(torch.bfloat16).to(loaded)
    before = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
    engine = TrainEngine(model, engine_cfg(lr=1e-6, dtype=compute, weight_decay=0.0, grad_clip=0.0))
    assert all(p.dtype == torch.float32 for p in engine.module.parameters())  # master weights
    for s in range(steps):
        engine.train_step(full_batch(s), loss_fn)
    return {k: v.detach().float() - before[k] for k, v in engine.module.state_dict().items()}


@pytest.mark.parametrize("compute", ["fp32", "bf16"])
def test_a_bf16_checkpoint_learns_as_the_fp32_one_does(compute):
    want = deltas("fp32", torch.float32)
    got = deltas(compute, torch.bfloat16)
    flat_got, flat_want = (torch.cat([v.flatten() for v in d.values()]) for d in (got, want))
    changed = (flat_got != 0).float().mean().item()
    assert changed > 0.95, changed  # bf16 weights: most updates round away
    cosine = torch.nn.functional.cosine_similarity(flat_got, flat_want, dim=0).item()
    assert cosine > (0.999 if compute == "fp32" else 0.9), cosine
    assert flat_got.abs().max() < 1e-5  # Adam: ~lr per step


@pytest.fixture(scope="module")
def rollouts():
    model = tiny_model(4, sharpen=1.0)
    trajs = generate(model, prompts_mixed(4) * 2, params(max_new_tokens=12), seeds=list(range(8)))
    return model, trajs


@pytest.fixture(scope="module")
def image_rollouts():
    """Four image and four text prompts, sampled by an fp32 LLaDA-V-shaped model (full attention)."""
    model = tiny_vlm(4)
    return model, sampled_image_rollouts(model, params(max_new_tokens=12))


@pytest.mark.parametrize("images", [False, True], ids=["text", "images"])
@pytest.mark.parametrize("name", ["tracerl", "tracerl_value"])
def test_bf16_compute_first_pass_ratio_is_exactly_one(rollouts, image_rollouts, name, images):
    start, trajs = image_rollouts if images else rollouts
    model = copy.deepcopy(start).to(torch.bfloat16)
    engine = TrainEngine(model, EngineConfig(lr=1e-6, dtype="bf16"))
    value = TrainEngine(ValueModel(copy.deepcopy(start).to(torch.bfloat16)), EngineConfig(lr=1e-6, dtype="bf16"))
    # eps 1e-6: a ratio off by one bf16 rounding of a log-prob would be clipped.
    algo = AlgoConfig(name=name, eps_low=1e-6, eps_high=1e-6, ppo_epochs=1)
    updater = PolicyUpdater(engine, algo, model.config, value_engine=value if algo.uses_value else None)
    m = updater.rl_step(trajs, [1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 0.25, -0.75], 0)
    assert m["ratio_max"] == 1.0 and m["clip_frac"] == 0.0, m
    assert m["ratio_min"] == m["ratio_mean"] == 1.0, m
    if algo.uses_value:
        assert m["value_loss"] > 0 and torch.isfinite(torch.tensor(m["value_loss"]))
    if images:  # the image path ran in the training forward and was trained through it
        trained = engine.module.mm_projector[0].weight
        assert trained.dtype == torch.float32  # fp32 master weights, as for the decoder
        assert not torch.equal(trained, start.mm_projector[0].weight.to(torch.bfloat16).float())


def test_value_head_follows_the_backbone_dtype(rollouts):
    start, trajs = rollouts
    value = ValueModel(copy.deepcopy(start).to(torch.bfloat16))
    assert value.value_head.weight.dtype == torch.bfloat16
    rows = [r for i, t in enumerate(trajs) for r in trace_rows(t, i, "block_causal", 1, start.config.mask_token_id)]
    mb = micro_batches(rows, 4096, start.config.pad_token_id)[0]
    with torch.no_grad():
        v = value(mb)
    assert v.dtype == torch.float32 and torch.equal(v, torch.zeros_like(v))  # zero-initialised head
