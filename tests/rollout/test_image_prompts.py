"""Image prompts through the sampler (rollout/images.py, the slot table's image features): exact against
the uncached reference for every strategy, independent of batch neighbours, encoded once per image."""
import pytest
import torch

from helpers import STRATEGIES, image_prompts, params, tiny_vlm
from rollout.images import encode_prompt_images
from rollout.sampler import generate
from tests.rollout.test_sampler import assert_same


@pytest.mark.parametrize("strategy, views", [(s, "square") for s in STRATEGIES]
                         + [("dynamic", "anyres")])
def test_cached_equals_uncached_with_image_prompts(strategy, views):
    # Block-causal (where the cache is exact) with prefill, and continuous batching: 2 slots, 4 prompts.
    # Anyres views: two pictures of different placeholder counts, one with its grid shrunk.
    model = tiny_vlm(4, family="tiny", views=views)
    prompts, pictures = image_prompts(model, 4)
    images = encode_prompt_images(model, pictures)
    p = params(strategy=strategy, max_batch_rows=2)
    cached = generate(model, prompts, p, images=images)
    uncached = generate(model, prompts, p.model_copy(update={"use_cache": False}), images=images)
    assert_same(cached, uncached)
    # The image changes the decode (its sampling distributions): the features are really read.
    other = generate(model, prompts, p, images=[images[2], None, images[0], None])
    assert other[0].logprobs[0] != pytest.approx(cached[0].logprobs[0], abs=1e-4)


@pytest.mark.parametrize("strategy, use_cache, views", [(s, True, "square") for s in STRATEGIES]
                         + [("dynamic", False, "square"), ("dynamic", True, "anyres")])
def test_full_attention_image_prompt_alone_equals_in_a_mixed_batch(strategy, use_cache, views):
    model = tiny_vlm(4, family="llada_v", views=views)
    prompts, pictures = image_prompts(model, 4)
    images = encode_prompt_images(model, pictures)
    p = params(strategy=strategy, max_new_tokens=16, use_cache=use_cache)
    seeds = [11, 12, 13, 14]
    batch = generate(model, prompts, p, seeds=seeds, images=images)
    alone = [generate(model, [q], p, seeds=[s], images=[im])[0] for q, s, im in zip(prompts, seeds, images)]
    assert_same(batch, alone)
    assert all(t.canvas_len == 16 for t in batch)


def test_each_distinct_image_is_encoded_once(monkeypatch):
    model = tiny_vlm(4)
    prompts, pictures = image_prompts(model, 4)
    calls = []
    encode = model.encode_images
    monkeypatch.setattr(model, "encode_images", lambda px, sizes: calls.append(px.shape[0]) or encode(px, sizes))
    samples = [pictures[0]] * 3 + [None] + [pictures[2]] * 2  # a prompt's samples share one image object
    features = encode_prompt_images(model, samples)
    assert calls == [2]
    assert features[0] is not None and features[3] is None
    assert torch.equal(features[0], features[2]) and not torch.equal(features[0], features[4])


@pytest.mark.parametrize("bad, message", [
    ("no_image", "image placeholder ids .* but no image"),
    ("text_model", "family 'tiny' takes no images"),
])
def test_image_prompt_errors_are_named(bad, message):
    from helpers import tiny_model

    vlm = tiny_vlm(4)
    prompts, pictures = image_prompts(vlm, 4)
    images = encode_prompt_images(vlm, pictures)
    with pytest.raises(ValueError, match=message):
        if bad == "no_image":
            generate(vlm, prompts[:1], params())
        else:
            generate(tiny_model(4), prompts[1:2], params(), images=images[:1])


def test_bf16_model_decodes_image_prompts():
    # GPU rollout workers hold LLaDA-V in bf16 (conf/model/llada_v.yaml): the features come out in the
    # model's dtype and splice into its bf16 embeddings; the image still steers the decode.
    model = tiny_vlm(4).to(torch.bfloat16)
    prompts, pictures = image_prompts(model, 4)
    images = encode_prompt_images(model, pictures)
    shown = [i for i, im in enumerate(images) if im is not None]
    assert len(shown) >= 2 and all(images[i].dtype == torch.bfloat16 for i in shown)
    swapped = list(images)
    swapped[shown[0]], swapped[shown[1]] = images[shown[1]], images[shown[0]]
    p = params(strategy="dynamic")
    out = generate(model, prompts, p, seeds=[1, 2, 3, 4], images=images)
    other = generate(model, prompts, p, seeds=[1, 2, 3, 4], images=swapped)
    assert len(out) == 4 and all(t.response_ids for t in out)
    assert out[shown[0]].logprobs != other[shown[0]].logprobs
