"""LLaDA-V's anyres views (models/anyres.py): our packing equals transformers' LlavaOnevision packing, a tiny
anyres checkpoint in LLaDA-V's layout round-trips with its image_newline, and bad view keys are named."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import LlavaOnevisionConfig, LlavaOnevisionModel

from models import anyres
from models.checkpoint import load_model, save_model
from models.tiny import TINY_ANYRES, TINY_VISION, synthetic_config, write_tiny_checkpoint
from models.vision import DiffusionVLM, ImagePreprocessor, image_placeholders

# (height, width): square, wide (1 x 2 tiles, unpadded), tall, and two whose grids exceed 2 tiles' worth.
SIZES = [(32, 32), (20, 50), (100, 30), (70, 90), (96, 64)]


def reference_pack(cfg, features, size, newline):
    """transformers' LlavaOnevisionModel.pack_image_features on the same views' features."""
    hf = LlavaOnevisionConfig(vision_config={**TINY_VISION, "model_type": "siglip_vision_model"},
                              image_grid_pinpoints=anyres.hf_pinpoints(cfg), vision_aspect_ratio=cfg.image_aspect_ratio)
    packed, _ = LlavaOnevisionModel.pack_image_features(SimpleNamespace(config=hf), [features], torch.tensor([size]),
                                                        newline, cfg.image_aspect_ratio)
    return packed[0]


def test_packing_equals_transformers_llava_onevision():
    cfg = synthetic_config(12, family="llada_v", vision=dict(TINY_VISION), **TINY_ANYRES)
    torch.manual_seed(0)
    newline, shrunk = torch.randn(cfg.hidden_size), 0
    for size in SIZES:
        rows, cols = anyres.grid_shape(cfg, size)
        features = torch.randn(1 + rows * cols, 16, cfg.hidden_size)
        ours = anyres.pack_views(cfg, features, size, newline)
        torch.testing.assert_close(ours, reference_pack(cfg, features, size, newline), rtol=0, atol=0)
        assert len(ours) == anyres.feature_count(cfg, size) <= cfg.image_tokens
        assert torch.equal(ours[:16], features[0])  # the base view first
        shrunk += len(ours) - 16 < rows * cols * 16 * 0.5  # downsampled, not merely unpadded
    assert shrunk >= 2


def test_model_encodes_each_image_as_transformers_packs_it():
    cfg = synthetic_config(12, family="llada_v", vision=dict(TINY_VISION), **TINY_ANYRES)
    torch.manual_seed(1)
    model = DiffusionVLM(cfg).eval()
    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in SIZES]
    pixels = ImagePreprocessor(cfg)(pictures)
    with torch.no_grad():
        got = model.encode_images(pixels.pixel_values, pixels.image_sizes)
        for u, (picture, size) in enumerate(zip(pictures, SIZES)):
            views = pixels.pixel_values[u, :anyres.view_count(cfg, size)]
            want = reference_pack(cfg, model._project(views), size, model.image_newline)
            n = len(image_placeholders(cfg, picture))
            assert n == len(want)
            torch.testing.assert_close(got[u, :n], want, rtol=0, atol=1e-6)
            assert not got[u, n:].any()  # zero padding up to image_tokens


def test_anyres_checkpoint_round_trips_in_llada_v_layout(tmp_path):
    path = write_tiny_checkpoint(tmp_path / "model", seed=2, family="llada_v", **TINY_ANYRES)
    config = json.loads((path / "config.json").read_text())
    assert (config["image_aspect_ratio"], config["mm_patch_merge_type"]) == ("anyres_max_2", "spatial_unpad")
    assert config["image_grid_pinpoints"] == TINY_ANYRES["image_grid_pinpoints"]
    assert "model.image_newline" in load_file(str(path / "model.safetensors"))
    model = load_model(path)
    assert model.config.max_tiles == 2 and model.image_newline.requires_grad
    again = load_model(save_model(model, tmp_path / "export"))
    assert again.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    # LLaVA's range form of the pinpoints reads as the same list.
    config["image_grid_pinpoints"] = "(1x1),(2x2),(3x3)"
    (path / "config.json").write_text(json.dumps(config))
    assert load_model(path).config == model.config


@pytest.mark.parametrize("key, value, message", [
    ("image_aspect_ratio", "pad", "image_aspect_ratio='pad' is not supported: allowed values are 'square' and"),
    ("mm_patch_merge_type", "flat", "mm_patch_merge_type='flat' .* allowed value is 'spatial_unpad'"),
    ("image_grid_pinpoints", [384, 768], "image_grid_pinpoints=.*expected a list of \\[width, height\\]"),
])
def test_bad_view_keys_are_named(tmp_path, key, value, message):
    path = write_tiny_checkpoint(tmp_path / "model", family="llada_v", **TINY_ANYRES)
    config = json.loads((path / "config.json").read_text())
    config[key] = value
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        load_model(path)


@pytest.mark.parametrize("tiles", [2, 4, 9])
def test_no_image_gives_more_features_than_image_tokens(tiles):
    """image_tokens bounds every image's count (features are padded to it): 300 random sizes on LLaDA-V's
    geometry (27 x 27 patches of 384, up to 6 x 6 tiles)."""
    import random

    vision = dict(TINY_VISION, image_size=384, patch_size=14)
    cfg = synthetic_config(12, family="llada_v", vision=vision, image_aspect_ratio=f"anyres_max_{tiles}",
                           image_grid_pinpoints=anyres.expand_pinpoints("(1x1),...,(6x6)", 384))
    rng = random.Random(tiles)
    counts = [anyres.feature_count(cfg, (rng.randint(8, 4000), rng.randint(8, 4000))) for _ in range(300)]
    assert max(counts) <= cfg.image_tokens and max(counts) > 0.9 * cfg.image_tokens
