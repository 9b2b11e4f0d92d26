"""How each family's Hugging Face checkpoints name their config keys and tensors.

One `Layout` per family, read and written by models/checkpoint.py. Our module names follow the
Qwen layout (models/transformer.py), so Qwen-shaped families only add a `model.` prefix while
LLaDA (OLMo naming) renames through its tables.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Layout:
    model_type: str
    architectures: list[str]
    # ModelConfig field -> config.json key(s). Every key is written; the first one present is read.
    keys: dict[str, tuple[str, ...]]
    # config.json keys whose value is the only one our decoder implements (written; checked on read).
    fixed: dict[str, object]
    prefix: str  # before every tensor name except the LM head
    lm_head: str  # full tensor name of the output projection
    layer_prefix: str = "layers."
    top: dict[str, str] = field(default_factory=dict)  # our top-level module -> theirs
    layer: dict[str, str] = field(default_factory=dict)  # our per-layer module -> theirs
    nested: dict[str, str] = field(default_factory=dict)  # our top-level submodule -> its path there
    # Checkpoint tensors we read past when our model has no such entry (parts it does not use).
    ignored: tuple[str, ...] = ()

    def tensor_name(self, ours: str) -> str:
        """Checkpoint name of our state_dict entry `ours` (e.g. layers.3.mlp.up_proj.weight)."""
        if "." not in ours:  # a parameter of the model itself (LLaDA-V's image_newline)
            return f"{self.prefix}{ours}"
        module, kind = ours.rsplit(".", 1)
        if module == "lm_head":
            return self.lm_head
        head, _, rest = module.partition(".")
        if head in self.nested:  # transformers 4 nests SiglipVisionModel's modules under vision_model, 5 not
            return f"{self.prefix}{self.nested[head]}.{rest.removeprefix('vision_model.')}.{kind}"
        if module.startswith("layers."):
            _, index, rest = module.split(".", 2)
            return f"{self.prefix}{self.layer_prefix}{index}.{self.layer.get(rest, rest)}.{kind}"
        return f"{self.prefix}{self.top.get(module, module)}.{kind}"


# Keys shared by every family: token ids and our block size (extra keys reference engines ignore).
_COMMON_KEYS: dict[str, tuple[str, ...]] = {
    "block_size": ("block_size",),
    "mask_token_id": ("mask_token_id",),
    "eos_token_id": ("eos_token_id",),
    "pad_token_id": ("pad_token_id",),
    "stop_token_ids": ("stop_token_ids",),
}

# Qwen2 (Dream) configs have no head_dim: its code derives hidden_size // num_attention_heads.
_QWEN2_KEYS: dict[str, tuple[str, ...]] = {
    "vocab_size": ("vocab_size",),
    "hidden_size": ("hidden_size",),
    "intermediate_size": ("intermediate_size",),
    "num_layers": ("num_hidden_layers",),
    "num_heads": ("num_attention_heads",),
    "num_kv_heads": ("num_key_value_heads",),
    "max_position_embeddings": ("max_position_embeddings",),
    "rope_theta": ("rope_theta",),
    "rms_norm_eps": ("rms_norm_eps",),
    "tie_word_embeddings": ("tie_word_embeddings",),
    **_COMMON_KEYS,
}
_QWEN3_KEYS = {**_QWEN2_KEYS, "head_dim": ("head_dim",)}

SDAR = Layout(
    model_type="sdar", architectures=["SDARForCausalLM"], keys=_QWEN3_KEYS,
    fixed={"hidden_act": "silu", "attention_bias": False},
    prefix="model.", lm_head="lm_head.weight")

DREAM = Layout(
    model_type="Dream", architectures=["DreamModel"], keys=_QWEN2_KEYS,
    fixed={"hidden_act": "silu", "use_sliding_window": False},
    prefix="model.", lm_head="lm_head.weight")

LLADA = Layout(
    model_type="llada", architectures=["LLaDAModelLM"],
    keys={
        # embedding_size is the (padded) table size; LLaDA ships vocab_size equal to it.
        "vocab_size": ("embedding_size", "vocab_size"),
        "hidden_size": ("d_model",),
        "intermediate_size": ("mlp_hidden_size",),
        "num_layers": ("n_layers",),
        "num_heads": ("n_heads",),
        "num_kv_heads": ("n_kv_heads",),
        "max_position_embeddings": ("max_sequence_length",),
        "rope_theta": ("rope_theta",),
        "rms_norm_eps": ("rms_norm_eps",),
        "tie_word_embeddings": ("weight_tying",),
        **_COMMON_KEYS,
    },
    fixed={"block_type": "llama", "activation_type": "silu", "layer_norm_type": "rms",
           "layer_norm_with_affine": True, "include_bias": False, "include_qkv_bias": False,
           "attention_layer_norm": False, "input_emb_norm": False, "scale_logits": False,
           "alibi": False, "rope": True, "block_group_size": 1},
    prefix="model.transformer.", lm_head="model.transformer.ff_out.weight",
    layer_prefix="blocks.",
    top={"embed_tokens": "wte", "norm": "ln_f"},
    # In LLaDA's llama block ff_proj is the SwiGLU gate (activation applied), up_proj the linear
    # branch and ff_out the down projection.
    layer={"self_attn.q_proj": "q_proj", "self_attn.k_proj": "k_proj", "self_attn.v_proj": "v_proj",
           "self_attn.o_proj": "attn_out", "mlp.gate_proj": "ff_proj", "mlp.up_proj": "up_proj",
           "mlp.down_proj": "ff_out", "input_layernorm": "attn_norm",
           "post_attention_layernorm": "ff_norm"})

# LLaDA-V (ML-GSAI/LLaDA-V, a LLaVA-NeXT model): its LLaDA decoder uses Llama names and config keys;
# the SigLIP tower sits at model.vision_tower.vision_tower.*, the projector at model.mm_projector.{0,2}.*.
# The vision config keys (mm_*, vision_config) are read and written by models/checkpoint.py.
LLADA_V = Layout(
    model_type="llava_llada", architectures=["LlavaLLaDAModelLM"],
    keys=_QWEN2_KEYS,
    fixed={"hidden_act": "silu", "attention_bias": False, "mm_projector_type": "mlp2x_gelu",
           "mm_use_im_start_end": False, "mm_use_im_patch_token": False},
    prefix="model.", lm_head="lm_head.weight",
    nested={"vision_tower": "vision_tower.vision_tower.vision_model"},
    # The row separator of spatial_unpad merging: loaded for anyres views, unused by one square view.
    ignored=("model.image_newline",))

# Checkpoint layout of each of our families (tiny is an SDAR-shaped model).
FAMILY_LAYOUTS: dict[str, Layout] = {"sdar": SDAR, "tiny": SDAR, "dream": DREAM, "llada": LLADA, "llada_v": LLADA_V}

# config.json model_type -> family; plain qwen3 is a causal SDAR (block size 1 gives parity).
MODEL_TYPES: dict[str, str] = {"sdar": "sdar", "qwen3": "sdar", "Dream": "dream", "llada": "llada",
                               "llava_llada": "llada_v"}

# Mask ids the released checkpoints of each family use, when neither config nor tokenizer says.
KNOWN_MASK_IDS: dict[str, int] = {"sdar": 151669, "dream": 151666, "llada": 126336, "llada_v": 126336}
