"""Hostile checkpoint directories: each fails naming the file or key and what was expected."""
import json

import pytest
import torch

from models import DiffusionLM, ModelConfig, load_model, load_tokenizer, save_model

SMALL = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4, num_kv_heads=2,
             head_dim=8, max_position_embeddings=128, block_size=8, mask_token_id=63, eos_token_id=1, pad_token_id=0)


def _saved(path, sharded: bool = False, **config):
    """A random sdar checkpoint (several shards when `sharded`)."""
    torch.manual_seed(0)
    model = DiffusionLM(ModelConfig(family="sdar", **{**SMALL, **config}))
    return save_model(model, path, max_shard_size=20_000 if sharded else "5GB")


def _edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, **changes}))


@pytest.mark.parametrize("text, message", [("{not json", "is not valid JSON"), ("", "is not valid JSON"),
                                           ("[1, 2]", "must hold a JSON object, not list")])
def test_unreadable_config_json_is_named(tmp_path, text, message):
    _saved(tmp_path)
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ValueError, match=rf"config.json {message}"):
        load_model(tmp_path)


@pytest.mark.parametrize("index, message", [("{}", "has no weight_map object"), ("{bad", "is not valid JSON")])
def test_unreadable_shard_index_is_named(tmp_path, index, message):
    _saved(tmp_path, sharded=True)
    (tmp_path / "model.safetensors.index.json").write_text(index)
    with pytest.raises(ValueError, match=rf"model.safetensors.index.json {message}"):
        load_model(tmp_path)


@pytest.mark.parametrize("key, value", [("num_attention_heads", 0), ("num_key_value_heads", 0), ("hidden_size", -32),
                                        ("hidden_size", 32.5), ("hidden_size", "32"), ("head_dim", True),
                                        ("max_position_embeddings", 0), ("vocab_size", 0)])
def test_model_sizes_must_be_positive_integers(tmp_path, key, value):
    _saved(tmp_path)
    _edit_config(tmp_path, **{key: value})
    with pytest.raises(ValueError, match=rf"config.json: {key}={value!r} must be a positive integer"):
        load_model(tmp_path)


@pytest.mark.parametrize("config, overrides", [({"stop_token_ids": [64]}, {}), ({"stop_token_ids": [-1]}, {}),
                                               ({"eos_token_id": [1, 99]}, {}), ({"stop_token_ids": 5}, {}),
                                               ({}, {"stop_token_ids": [70]}), ({"mask_token_id": 63.0}, {}),
                                               ({}, {"pad_token_id": True})])
def test_token_and_stop_ids_must_be_in_the_vocabulary(tmp_path, config, overrides):
    _saved(tmp_path)
    _edit_config(tmp_path, **config)
    name = next(iter({**config, **overrides}))
    name = "stop_token_ids" if name == "eos_token_id" else name  # HF's extra eos ids become stop ids
    with pytest.raises(ValueError, match=rf"{tmp_path}: {name}=.* (is outside the vocabulary \(integer ids 0 to 63\)"
                                         r"|must be a list of token ids)"):
        load_model(tmp_path, overrides=overrides)


@pytest.mark.parametrize("sharded", [False, True])
def test_unreadable_weights_file_is_named(tmp_path, sharded):
    _saved(tmp_path, sharded=sharded)
    weights = sorted(tmp_path.glob("model*.safetensors"))[-1]
    weights.write_bytes(weights.read_bytes()[:100])  # a truncated download
    with pytest.raises(ValueError, match=rf"{weights.name} is not a readable safetensors file"):
        load_model(tmp_path)


def test_unknown_dllm_family_is_named(tmp_path):
    _saved(tmp_path)
    _edit_config(tmp_path, dllm_family="gpt")
    with pytest.raises(ValueError, match=r"config.json: dllm_family='gpt' is not supported; allowed values are \["):
        load_model(tmp_path)


@pytest.mark.parametrize("files", [{}, {"tokenizer.json": "{bad"}, {"tokenizer_config.json": "{}"}])
def test_a_directory_without_a_usable_tokenizer_is_named(tmp_path, files):
    _saved(tmp_path)  # config.json and weights, no tokenizer
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=rf"{tmp_path}: no loadable tokenizer"):
        load_tokenizer(tmp_path)
