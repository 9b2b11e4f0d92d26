"""TraceRL on image prompts: the learner re-encodes each trajectory's image in its own forward, and its
log-probs equal the sampler's; the value model reads the same inputs."""
from dataclasses import replace

import pytest
import torch

from helpers import MASK, PAD, image_prompts, params, sampled_image_rollouts, tiny_vlm
from learner.batching import micro_batches
from learner.images import trajectory_images
from learner.logprobs import token_logprobs
from learner.rows import trace_rows
from learner.value import ValueModel
from tasks.images import data_uri


def sampled(model, use_cache: bool):
    return sampled_image_rollouts(model, params(max_new_tokens=16, strategy="dynamic", use_cache=use_cache))


@pytest.mark.parametrize("family, use_cache, views", [("llada_v", False, "square"), ("tiny", True, "square"),
                                                     ("llada_v", False, "anyres")])
def test_learner_logprobs_equal_sampler_on_image_prompts(family, use_cache, views):
    # Full attention against its exact (uncached) sampler; block-causal with its exact cache.
    model = tiny_vlm(4, family=family, views=views)
    trajs = sampled(model, use_cache)
    images = trajectory_images(trajs, model.config)
    assert len(images.pixels.pixel_values) == 2 and len(images.of) == 4  # two distinct images, four image trajectories
    attention, worst, seen = model.config.attention, 0.0, 0
    rows = [r for i, t in enumerate(trajs) for r in trace_rows(t, i, attention, 1, MASK, 0, 1024)]
    mbs = micro_batches(rows, 256, PAD, images)
    assert all(mb.images is not None for mb in mbs) and any(len(mb.images.pixel_values) for mb in mbs)
    for mb in mbs:
        with torch.no_grad():
            lp, _ = token_logprobs(model, mb, MASK)
        rec = torch.tensor([trajs[i].logprobs[j] for i, j in zip(mb.traj_index.tolist(), mb.token_index.tolist())])
        worst = max(worst, float((lp - rec).abs().max()))
        seen += mb.num_tokens
    assert seen == sum(len(t.response_ids) for t in trajs)
    assert worst <= 1e-5
    # Without the images the same rows are not the sampler's contexts any more.
    blind = [mb for mb in micro_batches(rows, 256, PAD, images) if len(mb.images.pixel_values)][0]
    blind.images.pixel_values = torch.zeros_like(blind.images.pixel_values)
    with torch.no_grad():
        lp, _ = token_logprobs(model, blind, MASK)
    rec = torch.tensor([trajs[i].logprobs[j] for i, j in zip(blind.traj_index.tolist(), blind.token_index.tolist())])
    assert float((lp - rec).abs().max()) > 1e-3


@pytest.mark.parametrize("views", ["square", "anyres"])
def test_projector_gets_gradient_and_value_model_reads_the_image(views):
    model = tiny_vlm(4, views=views).train()
    trajs = sampled(model.eval(), use_cache=False)
    model.train()
    images = trajectory_images(trajs, model.config)
    rows = [r for i, t in enumerate(trajs) for r in trace_rows(t, i, "full", 1, MASK, 0, 1024)]
    mb = [mb for mb in micro_batches(rows, 256, PAD, images) if len(mb.images.pixel_values)][0]
    lp, _ = token_logprobs(model, mb, MASK)
    lp.sum().backward()
    assert model.mm_projector[0].weight.grad.abs().sum() > 0
    if views == "anyres":  # the row separator trains with the projector
        assert model.image_newline.grad.abs().sum() > 0
    value = ValueModel(model)
    torch.nn.init.normal_(value.value_head.weight)
    with torch.no_grad():
        seen = value(mb)
        mb.images.pixel_values = torch.zeros_like(mb.images.pixel_values)
        blind = value(mb)
    assert seen.shape == (mb.num_tokens,) and not torch.allclose(seen, blind)


def test_placeholders_without_an_image_are_named():
    model = tiny_vlm(4)
    trajs = sampled(model, use_cache=False)
    trajs[0].image = ""
    with pytest.raises(ValueError, match="trajectory 0 .* image placeholder ids"):
        trajectory_images(trajs, model.config)


def test_a_frozen_tower_neither_trains_nor_travels_in_the_weight_sync():
    from learner.engine import TrainEngine
    from learner.engine_config import EngineConfig

    model = tiny_vlm(4)
    trajs = sampled(model, use_cache=False)
    model.freeze_vision()
    engine = TrainEngine(model, EngineConfig(lr=1e-2, weight_decay=0.0))
    synced = [name for name, _, _ in engine.full_layout(synced=True)]
    assert [name for name, _ in engine.full_tensors(synced=True)] == synced
    assert "mm_projector.0.weight" in synced and "embed_tokens.weight" in synced
    assert not [n for n in synced if n.startswith("vision_tower.")]
    assert len(engine.full_layout()) == len(model.state_dict())  # checkpoints keep everything
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = [r for i, t in enumerate(trajs) for r in trace_rows(t, i, "full", 1, MASK, 0, 1024)]
    images = trajectory_images(trajs, model.config)
    mbs = [mb for mb in micro_batches(rows, 256, PAD, images) if len(mb.images.pixel_values)]
    engine.train_step(mbs[:1], lambda module, mb: (-token_logprobs(module, mb, MASK)[0].sum(), {}))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in after if k.startswith("vision_tower."))
    assert not torch.equal(before["mm_projector.0.weight"], after["mm_projector.0.weight"])


@pytest.mark.parametrize("name", ["tracerl", "tracerl_value", "diffu_grpo", "coupled_grpo", "random_masking"])
def test_rl_objectives_step_on_image_prompts(name):
    from learner.algo_config import AlgoConfig
    from learner.engine import TrainEngine
    from learner.engine_config import EngineConfig
    from learner.policy_update import PolicyUpdater

    model = tiny_vlm(4)
    trajs = sampled(model, use_cache=True)[:4]
    model.freeze_vision()
    value = ValueModel(tiny_vlm(4)) if name == "tracerl_value" else None
    updater = PolicyUpdater(TrainEngine(model, EngineConfig(lr=1e-3)), AlgoConfig(name=name), model.config,
                            value_engine=None if value is None else TrainEngine(value, EngineConfig(lr=1e-3)))
    before = model.mm_projector[0].weight.detach().clone()
    metrics = updater.rl_step(trajs, [1.0, -1.0, 0.5, -0.5], 0)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert not torch.equal(before, model.mm_projector[0].weight)  # the image path is trained


def test_supervised_steps_on_image_prompts_train_the_projector():
    from learner.algo_config import AlgoConfig
    from learner.engine import TrainEngine
    from learner.engine_config import EngineConfig
    from learner.policy_update import PolicyUpdater

    model = tiny_vlm(4)
    prompts, pictures = image_prompts(model, 4)
    model.freeze_vision()
    updater = PolicyUpdater(TrainEngine(model, EngineConfig(lr=1e-3)), AlgoConfig(name="sft_semi_ar"), model.config)
    before = model.mm_projector[0].weight.detach().clone()
    pairs = [(prompts[0], [5, 6, 1], data_uri(pictures[0])), (prompts[1], [7, 1], "")]
    assert updater.sft_step(pairs, 0)["sft_loss"] > 0
    assert not torch.equal(before, model.mm_projector[0].weight)
    with pytest.raises(ValueError, match="names no image"):
        updater.sft_step([(prompts[0], [5, 1])], 1)


@pytest.mark.parametrize("views", ["square", "anyres"])
def test_text_micro_batches_run_the_same_modules_as_image_ones(views):
    """A vision-language model runs its tower and projector in every forward, on a blank picture whose
    features are dropped when no row has an image: ZeRO-3 gathers parameters module by module in forward
    and reduces their gradients in backward, so a rank that skipped them would stall the others."""
    model = tiny_vlm(4, views=views).train()
    trajs = sampled(model.eval(), use_cache=False)
    model.train()
    calls: list[str] = []
    for name, module in model.named_modules():
        module.register_forward_pre_hook(lambda _m, _a, name=name: calls.append(name))
    order = {}
    for kind, share in (("image", trajs[0::2]), ("text", trajs[1::2])):
        rows = [r for i, t in enumerate(share) for r in trace_rows(t, i, "full", 1, MASK, 0, 1024)]
        (mb,) = micro_batches(rows, 4096, PAD, trajectory_images(share, model.config))
        assert len(mb.images.pixel_values) == (2 if kind == "image" else 0)
        calls.clear()
        model.zero_grad(set_to_none=True)
        lp, _ = token_logprobs(model, mb, MASK)
        lp.sum().backward()
        order[kind] = list(calls)
        assert all(p.grad is not None for p in model.mm_projector.parameters())  # in the graph on both
    assert order["text"] == order["image"] and "vision_tower" in order["text"]
    with torch.no_grad():  # the text rows' log-probs are exactly the text model's
        images_off = token_logprobs(model, replace(mb, images=None), MASK)[0]
        torch.testing.assert_close(token_logprobs(model, mb, MASK)[0], images_off, rtol=0, atol=0)
    assert torch.count_nonzero(model.mm_projector[0].weight.grad) == 0  # the blank picture taught nothing
