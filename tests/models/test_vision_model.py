"""The LLaDA-V-shaped model (models/vision.py): SigLIP features as LLaDA-V selects them, LLaDA-V's checkpoint
layout both ways, and image features exactly at the placeholder positions."""
import json
import random

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import SiglipVisionConfig, SiglipVisionModel

from models.checkpoint import load_model, save_model
from models.tiny import TINY_VISION, write_tiny_checkpoint
from models.vision import DiffusionVLM, ImagePreprocessor, RowImages, image_placeholders
from tasks.builtin.shapes import sample_shapes
from tasks.images import load_image


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    path = write_tiny_checkpoint(tmp_path_factory.mktemp("vlm") / "model", seed=3, family="llada_v")
    return path, load_model(path)


def released_layout(ours, tmp_path, full_layers: int):
    """Our export rewritten as LLaDA-V ships it: no vision_config, mm_vision_tower naming a local SigLIP
    directory of the full tower (one layer more than stored), and an image_newline tensor (which one square
    view reads past)."""
    config = json.loads((ours / "config.json").read_text())
    del config["vision_config"], config["dllm_family"]
    config.update(mm_vision_tower="siglip")
    (tmp_path / "released").mkdir()
    (tmp_path / "released" / "config.json").write_text(json.dumps(config))
    tensors = load_file(str(ours / "model.safetensors"))
    tensors.setdefault("model.image_newline", torch.randn(config["hidden_size"]))
    save_file(tensors, str(tmp_path / "released" / "model.safetensors"))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (ours / name).exists():
            (tmp_path / "released" / name).write_text((ours / name).read_text())
    (tmp_path / "released" / "siglip").mkdir()
    full = {**TINY_VISION, "num_hidden_layers": full_layers, "model_type": "siglip_vision_model"}
    (tmp_path / "released" / "siglip" / "config.json").write_text(json.dumps(full))
    return tmp_path / "released"


def test_released_layout_loads_and_features_are_siglip_select_layer_minus_2(tiny_vlm, tmp_path):
    path, ours = tiny_vlm
    released = load_model(released_layout(path, tmp_path, TINY_VISION["num_hidden_layers"] + 1))
    assert isinstance(released, DiffusionVLM)
    for (name, a), b in zip(ours.state_dict().items(), released.state_dict().values()):
        assert torch.equal(a, b), name
    # The full tower LLaDA-V cut its last layer from: our first layers, one more of its own.
    torch.manual_seed(0)
    full = SiglipVisionModel(SiglipVisionConfig(**{**TINY_VISION, "num_hidden_layers": 3}, vision_use_head=False))
    missing, _ = full.load_state_dict(ours.vision_tower.state_dict(), strict=False)
    assert all(".layers.2." in m for m in missing) and missing
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        selected = full(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        p0, p2 = released.mm_projector[0], released.mm_projector[2]
        want = F.linear(F.gelu(F.linear(selected, p0.weight, p0.bias)), p2.weight, p2.bias)
        got = released.encode_images(pixels)
    assert got.shape == (2, 16, ours.config.hidden_size)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_checkpoint_round_trip_in_llada_v_names(tiny_vlm, tmp_path):
    path, ours = tiny_vlm
    names = set(load_file(str(path / "model.safetensors")))
    assert {"model.mm_projector.0.weight", "model.mm_projector.2.bias", "lm_head.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.vision_tower.vision_tower.vision_model.encoder.layers.1.mlp.fc2.weight"} <= names
    config = json.loads((path / "config.json").read_text())
    assert (config["model_type"], config["mm_projector_type"], config["mm_hidden_size"]) == (
        "llava_llada", "mlp2x_gelu", TINY_VISION["hidden_size"])
    again = load_model(save_model(ours, tmp_path / "export"))
    assert again.config == ours.config
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), again.state_dict().values()))


def test_unsupported_projector_is_named(tiny_vlm, tmp_path):
    path, _ = tiny_vlm
    config = json.loads((path / "config.json").read_text())
    config["mm_projector_type"] = "linear"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="mm_projector_type='linear' is not supported"):
        load_model(tmp_path)


def test_image_features_land_exactly_at_the_placeholders(tiny_vlm):
    _, model = tiny_vlm
    cfg = model.config
    image = image_placeholders(cfg)
    assert image == list(range(cfg.vocab_size, cfg.vocab_size + 16))
    # Row 0: text, the image in a scrambled placeholder order, text; row 1: text only.
    order = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([[7, 8] + [image[i] for i in order] + [9], list(range(10, 29))])
    pos = torch.arange(19).expand(2, -1)
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        feats = model.encode_images(pixels)[0]
        x = model.embed(ids, torch.stack([feats, torch.zeros_like(feats)]))
        torch.testing.assert_close(x[0, 2:18], feats[order], rtol=0, atol=0)
        torch.testing.assert_close(x[0, [0, 1, 18]], model.embed_tokens(ids[0, [0, 1, 18]]), rtol=0, atol=0)
        torch.testing.assert_close(x[1], model.embed_tokens(ids[1]), rtol=0, atol=0)
        # The whole forward: the images encoded inside it equal the spliced embeddings run through the layers.
        logits = model(ids, pos, images=RowImages(pixels, torch.tensor([0, -1])))
        h = x
        cos, sin = model.rotary(pos, h.dtype)
        for i, layer in enumerate(model.layers):
            h = layer(h, cos, sin, None, None, i)
        torch.testing.assert_close(logits, model.lm_head(model.norm(h)), rtol=0, atol=0)
        text_only = model(ids[1:], pos[1:])
        torch.testing.assert_close(logits[1:], text_only, rtol=0, atol=1e-6)


def test_a_text_model_refuses_images(tmp_path):
    model = load_model(write_tiny_checkpoint(tmp_path / "m"))
    with pytest.raises(ValueError, match="family 'tiny' takes no images"):
        model(torch.tensor([[7]]), torch.tensor([[0]]), images=RowImages(torch.zeros(1, 3, 32, 32), torch.tensor([0])))


def test_the_tiny_presets_features_carry_the_picture(tiny_vlm):
    """The decoder can only learn from what varies with the image: at least a quarter of the projected
    features' spread (N(0, 0.02) projector weights with default biases left ~2%, drowned in constants)."""
    _, model = tiny_vlm
    rows = [sample_shapes(random.Random(i)) for i in range(32)]
    with torch.no_grad():
        pixels = ImagePreprocessor(model.config)([load_image(r["image"]) for r in rows]).pixel_values
        feats = model.encode_images(pixels)
    assert feats.std(0).mean() > 0.25 * feats.std()
