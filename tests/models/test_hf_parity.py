"""Our decoder, loaded through models.checkpoint, reproduces transformers' reference models (docs/design.md §4).

SDAR with block size 1 (causal) == Qwen3ForCausalLM; Dream == Qwen2 with a full mask; LLaDA ==
Llama with a full mask after renaming its tensors to LLaDA's names. Each model is saved the way
its family ships (save_pretrained, or LLaDA's names and config keys) and loaded by our loader;
our saves of the Qwen-shaped families load back into transformers.
"""
import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

from dense_masks import column_mask
from models import load_model, save_model

VOCAB, SEQ, TOL = 96, 11, 1e-4
SHAPE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, max_position_embeddings=64, rms_norm_eps=1e-5, eos_token_id=1,
             pad_token_id=0, attn_implementation="eager")
# Llama module -> LLaDA module (written independently of models/layouts.py on purpose).
LLAMA_TO_LLADA = {
    "self_attn.q_proj": "q_proj", "self_attn.k_proj": "k_proj", "self_attn.v_proj": "v_proj",
    "self_attn.o_proj": "attn_out", "mlp.gate_proj": "ff_proj", "mlp.up_proj": "up_proj",
    "mlp.down_proj": "ff_out", "input_layernorm": "attn_norm", "post_attention_layernorm": "ff_norm",
}


def _randomize(hf_model: torch.nn.Module) -> torch.nn.Module:
    """O(1) logits and non-trivial norms, so a swapped or ignored tensor cannot hide under TOL."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in hf_model.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p) if "norm" in name else 0.1 * torch.randn_like(p))
    return hf_model.eval()


def _input_ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(1))


def _ours(model, ids: torch.Tensor, block_size: int | None) -> torch.Tensor:
    n, t = ids.shape
    cols = torch.arange(t)
    mask = column_mask(cols, cols, torch.ones(n, t, dtype=torch.bool), block_size)
    with torch.no_grad():
        return model(ids, cols.expand(n, t), mask)


def _hf_full(hf_model, ids: torch.Tensor) -> torch.Tensor:
    """Reference logits with every query attending to every key (a 4D all-True mask)."""
    n, t = ids.shape
    with torch.no_grad():
        return hf_model(ids, attention_mask=torch.ones(n, 1, t, t, dtype=torch.bool)).logits


def _edit_config(path, **changes) -> None:
    file = path / "config.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), **changes}))


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("kv_heads,tied", [(2, False), (4, True)], ids=["gqa", "tied"])
def test_sdar_block_size_1_matches_qwen3(tmp_path, kv_heads, tied):
    hf = _randomize(Qwen3ForCausalLM(Qwen3Config(
        **SHAPE, num_key_value_heads=kv_heads, head_dim=16, rope_theta=500.0, tie_word_embeddings=tied)))
    hf.save_pretrained(tmp_path / "hf")
    ours = load_model(tmp_path / "hf", overrides={"mask_token_id": VOCAB - 1, "block_size": 1})
    assert ours.config.family == "sdar" and ours.config.num_kv_heads == kv_heads
    assert ours.config.tie_word_embeddings == tied and ours.config.rope_theta == 500.0
    ids = _input_ids()
    with torch.no_grad():
        expected = hf(ids).logits
    assert _max_diff(_ours(ours, ids, 1), expected) <= TOL

    save_model(ours, tmp_path / "ours")  # our SDAR save is a Qwen3 checkpoint to transformers
    _edit_config(tmp_path / "ours", model_type="qwen3", architectures=["Qwen3ForCausalLM"])
    back = Qwen3ForCausalLM.from_pretrained(tmp_path / "ours", attn_implementation="eager").eval()
    with torch.no_grad():
        assert _max_diff(back(ids).logits, expected) <= TOL


def test_dream_matches_qwen2_with_full_mask(tmp_path):
    hf = _randomize(Qwen2ForCausalLM(Qwen2Config(**SHAPE, num_key_value_heads=2, rope_theta=700.0)))
    hf.save_pretrained(tmp_path / "hf")
    _edit_config(tmp_path / "hf", model_type="Dream", architectures=["DreamModel"], mask_token_id=VOCAB - 1)
    ours = load_model(tmp_path / "hf")
    assert ours.config.family == "dream" and ours.config.attention == "full"
    assert ours.config.qkv_bias and ours.layers[0].self_attn.q_proj.bias is not None
    # Dream's logits are shifted: the row at position i-1 scores token i, the sampler reads it there.
    assert ours.config.shift_logits
    ids = _input_ids()
    expected = _hf_full(hf, ids)
    assert _max_diff(_ours(ours, ids, None), expected) <= TOL
    with torch.no_grad():  # no mask at all is the same full attention
        assert _max_diff(ours(ids, torch.arange(SEQ).expand(2, SEQ)), expected) <= TOL

    save_model(ours, tmp_path / "ours")
    _edit_config(tmp_path / "ours", model_type="qwen2", architectures=["Qwen2ForCausalLM"])
    back = Qwen2ForCausalLM.from_pretrained(tmp_path / "ours", attn_implementation="eager").eval()
    assert _max_diff(_hf_full(back, ids), expected) <= TOL


def _llada_name(llama_name: str) -> str:
    if llama_name == "lm_head.weight":
        return "model.transformer.ff_out.weight"
    module, kind = llama_name.removeprefix("model.").rsplit(".", 1)
    if module.startswith("layers."):
        _, index, rest = module.split(".", 2)
        return f"model.transformer.blocks.{index}.{LLAMA_TO_LLADA[rest]}.{kind}"
    return f"model.transformer.{ {'embed_tokens': 'wte', 'norm': 'ln_f'}[module] }.{kind}"


def test_llada_matches_llama_with_full_mask(tmp_path):
    hf = _randomize(LlamaForCausalLM(LlamaConfig(**SHAPE, num_key_value_heads=4, rope_theta=5e5)))
    tmp_path.joinpath("config.json").write_text(json.dumps({
        "model_type": "llada", "architectures": ["LLaDAModelLM"], "d_model": 64, "n_layers": 2,
        "n_heads": 4, "n_kv_heads": 4, "mlp_hidden_size": 128, "vocab_size": VOCAB, "embedding_size": VOCAB,
        "max_sequence_length": 64, "rope_theta": 5e5, "rms_norm_eps": 1e-5, "weight_tying": False,
        "mask_token_id": VOCAB - 1, "eos_token_id": 1, "pad_token_id": 1, "block_type": "llama",
        "activation_type": "silu", "layer_norm_type": "rms", "include_bias": False, "rope": True}))
    save_file({_llada_name(k): v.contiguous() for k, v in hf.state_dict().items()},
              str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    ours = load_model(tmp_path)
    assert ours.config.family == "llada" and not ours.config.shift_logits
    ids = _input_ids()
    assert _max_diff(_ours(ours, ids, None), _hf_full(hf, ids)) <= TOL
