"""save_model/load_model round trips, token-id resolution and the loader's error messages."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from models import DiffusionLM, ModelConfig, build_tiny_tokenizer, load_model, save_model

SMALL = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    max_position_embeddings=128,
    rope_theta=1234.0,
    rms_norm_eps=1e-5,
    block_size=8,
    mask_token_id=63,
    eos_token_id=1,
    pad_token_id=0,
    stop_token_ids=[5, 6],
)


def _random_model(family: str, **overrides) -> DiffusionLM:
    torch.manual_seed(0)
    model = DiffusionLM(ModelConfig(family=family, **{**SMALL, **overrides}))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))  # norms and biases too, so each tensor is distinguishable
    return model


def _assert_same(a: DiffusionLM, b: DiffusionLM) -> None:
    assert a.config == b.config
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert sa[name].dtype == sb[name].dtype and torch.equal(sa[name], sb[name]), name
    ids = torch.randint(0, 64, (2, 9))
    pos = torch.arange(9).expand(2, 9)
    with torch.no_grad():  # also checks the RoPE table rebuilt after the meta-device load
        assert torch.equal(a(ids, pos), b(ids, pos))


def _config(path) -> dict:
    return json.loads((path / "config.json").read_text())


@pytest.mark.parametrize(
    "family,extra",
    [("sdar", {}), ("sdar", {"tie_word_embeddings": True}), ("dream", {}), ("llada", {}), ("tiny", {})],
    ids=["sdar", "sdar-tied", "dream", "llada", "tiny"],
)
def test_round_trip_is_bit_exact(tmp_path, family, extra):
    model = _random_model(family, **extra)
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    _assert_same(model, loaded)
    assert (loaded.lm_head.weight is loaded.embed_tokens.weight) == model.config.tie_word_embeddings
    assert (
        _config(tmp_path)["model_type"] == {"sdar": "sdar", "tiny": "sdar", "dream": "Dream", "llada": "llada"}[family]
    )


def test_sharded_round_trip_and_resave_clears_old_shards(tmp_path):
    model = _random_model("llada", num_kv_heads=4)
    save_model(model, tmp_path, max_shard_size=20_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and not (tmp_path / "model.safetensors").exists()
    _assert_same(model, load_model(tmp_path))

    save_model(model, tmp_path)  # unsharded over the sharded save: no stale shard or index left
    assert sorted(p.name for p in tmp_path.glob("model*")) == ["model.safetensors"]
    _assert_same(model, load_model(tmp_path))


def test_bf16_round_trip(tmp_path):
    model = _random_model("sdar").to(torch.bfloat16)
    save_model(model, tmp_path)
    assert _config(tmp_path)["torch_dtype"] == "bfloat16"
    loaded = load_model(tmp_path, dtype=torch.bfloat16)
    # RoPE angles are computed in fp32 even in a bf16 model: long positions stay exact.
    far = torch.tensor([[4000]])
    cos_bf16, _ = loaded.rotary(far, torch.bfloat16)
    cos_fp32, _ = loaded.rotary(far, torch.float32)
    assert torch.equal(cos_bf16, cos_fp32.to(torch.bfloat16))
    for name, t in model.state_dict().items():
        assert torch.equal(t, loaded.state_dict()[name]), name


def test_extra_config_kept_under_ours(tmp_path):
    save_model(
        _random_model("sdar"),
        tmp_path,
        extra_config={"auto_map": {"AutoModel": "modeling_sdar.SDARModel"}, "hidden_size": 1},
    )
    config = _config(tmp_path)
    assert config["auto_map"] == {"AutoModel": "modeling_sdar.SDARModel"} and config["hidden_size"] == 32


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_head_dim_their_configs_cannot_express_is_refused(tmp_path, family):
    with pytest.raises(ValueError, match="head_dim"):  # both derive it as hidden_size // heads
        save_model(_random_model(family, num_kv_heads=4, head_dim=16), tmp_path)


def test_overrides_win_and_eos_lists_become_stop_ids(tmp_path):
    save_model(_random_model("sdar"), tmp_path)
    config = _config(tmp_path)
    config["eos_token_id"] = [7, 8]
    (tmp_path / "config.json").write_text(json.dumps(config))
    cfg = load_model(tmp_path, overrides={"mask_token_id": 60, "block_size": 2}).config
    assert (cfg.mask_token_id, cfg.block_size, cfg.eos_token_id, cfg.stop_token_ids) == (60, 2, 7, [5, 6, 8])
    with pytest.raises(ValueError, match="allowed keys"):
        load_model(tmp_path, overrides={"hidden_size": 8})


def test_token_ids_from_tokenizer_else_clear_error(tmp_path):
    save_model(_random_model("sdar", vocab_size=102), tmp_path)
    config = _config(tmp_path)
    for key in ("mask_token_id", "eos_token_id", "pad_token_id"):
        del config[key]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="mask_token_id.*overrides="):
        load_model(tmp_path)
    build_tiny_tokenizer().save_pretrained(str(tmp_path))
    cfg = load_model(tmp_path).config
    assert (cfg.mask_token_id, cfg.eos_token_id, cfg.pad_token_id) == (2, 1, 0)


def test_family_can_be_forced(tmp_path):
    save_model(_random_model("dream"), tmp_path)
    config = _config(tmp_path)
    config["model_type"] = "qwen2"
    del config["dllm_family"]  # our own marker, which detection reads first
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"'qwen2'.*allowed values.*'Dream'.*'llada'.*'qwen3'.*'sdar'"):
        load_model(tmp_path)
    assert load_model(tmp_path, family="dream").config.family == "dream"


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path)
    save_model(_random_model("sdar"), tmp_path, max_shard_size=20_000)
    shard = sorted(tmp_path.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=shard.name):
        load_model(tmp_path)
    (tmp_path / "model.safetensors.index.json").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_model(tmp_path)


def test_missing_unexpected_and_misshaped_tensors_are_named(tmp_path):
    save_model(_random_model("sdar"), tmp_path)
    weights = tmp_path / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["model.extra.weight"] = tensors.pop("model.layers.1.self_attn.k_norm.weight")
    tensors["model.norm.weight"] = torch.ones(31)
    save_file(tensors, str(weights))
    with pytest.raises(
        ValueError,
        match=r"missing tensors \['model.layers.1.self_attn.k_norm.weight'\]"
        r".*unexpected tensors \['model.extra.weight'\]"
        r".*wrong shapes \['model.norm.weight \(31,\) \(config.json implies \(32,\)\)'\]",
    ):
        load_model(tmp_path)


def test_unsupported_config_values_are_refused(tmp_path):
    save_model(_random_model("sdar"), tmp_path)
    config = _config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "rope_scaling": {"rope_type": "yarn"}}))
    with pytest.raises(ValueError, match="yarn"):
        load_model(tmp_path)
    del config["num_hidden_layers"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="num_hidden_layers"):
        load_model(tmp_path)
