"""The tiny built-in model: an SDAR-shaped block-diffusion decoder on the character tokenizer.

It is written to disk like any real checkpoint, so tests and the built-in task load it through
exactly the path a TraDo checkpoint takes (load_model + load_tokenizer).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from .checkpoint import save_model
from .config import VISION_FAMILIES, ModelConfig
from .tokenizer import build_tiny_tokenizer
from .vision import build_model

# The tiny vision-language preset's SigLIP tower: 32 x 32 images in 8 x 8 patches (16 image tokens).
TINY_VISION: dict[str, Any] = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                   num_channels=3, image_size=32, patch_size=8, hidden_act="gelu_pytorch_tanh",
                                   layer_norm_eps=1e-6)

# Anyres views for the tiny tower (tests): a base view plus up to 3 x 3 tiles of 32 x 32, grid features shrunk
# beyond 2 tiles' worth (LLaDA-V's image_aspect_ratio / image_grid_pinpoints keys; [width, height] pixels).
TINY_ANYRES: dict[str, Any] = dict(image_aspect_ratio="anyres_max_2",
                                   image_grid_pinpoints=[[32 * i, 32 * j] for i in range(1, 4) for j in range(1, 4)])


def tiny_config(tokenizer: PreTrainedTokenizerBase, **overrides: Any) -> ModelConfig:
    """~0.8M parameters: hidden 128, 4 layers, 4 heads (2 KV), block size 4, 512 positions. A vision-language
    family (family="llada_v") gets the TINY_VISION tower unless `vision` is given."""
    if overrides.get("family") in VISION_FAMILIES:
        overrides.setdefault("vision", dict(TINY_VISION))
    values: dict[str, Any] = dict(
        family="tiny", vocab_size=len(tokenizer), hidden_size=128, intermediate_size=384, num_layers=4,
        num_heads=4, num_kv_heads=2, head_dim=32, max_position_embeddings=512, rope_theta=10000.0,
        rms_norm_eps=1e-6, block_size=4, mask_token_id=tokenizer.mask_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    values.update(overrides)
    return ModelConfig(**values)


# The tests' default shape: a model small enough for exact references and numeric gradients.
SYNTHETIC_SHAPE: dict[str, int] = dict(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                                       num_kv_heads=2, head_dim=8)


def synthetic_config(vocab_size: int, *, family: str = "sdar", block_size: int = 4, eos_token_id: int | None = None,
                     **shape: Any) -> ModelConfig:
    """A tokenizer-free config for random-weight models (tests, benches). The mask is the last id and
    EOS the one before it unless given, so random ids below both are ordinary tokens; `shape`
    overrides SYNTHETIC_SHAPE and any other ModelConfig field."""
    values: dict[str, Any] = dict(SYNTHETIC_SHAPE, family=family, vocab_size=vocab_size, block_size=block_size,
                                  mask_token_id=vocab_size - 1, pad_token_id=0,
                                  eos_token_id=vocab_size - 2 if eos_token_id is None else eos_token_id)
    values.update(shape)
    return ModelConfig(**values)


def write_tiny_checkpoint(path: str | Path, seed: int = 0, *, extra_tokens: list[str] | None = None,
                          **overrides: Any) -> Path:
    """Save the tiny tokenizer and a seeded random tiny model (overrides go to tiny_config)."""
    tokenizer = build_tiny_tokenizer(extra_tokens)
    cfg = tiny_config(tokenizer, **overrides)
    with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's RNG stream
        torch.manual_seed(seed)
        model = build_model(cfg)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.startswith("mm_projector."):
                    # Scale-preserving (std 1/sqrt(fan_in), no bias): N(0, 0.02) with default biases left
                    # the image ~2% of the projected features and nothing the decoder could learn from.
                    param.normal_(0.0, param.shape[1] ** -0.5) if param.dim() > 1 else param.zero_()
                elif param.dim() > 1:  # matrices N(0, 0.02) as in GPT/Qwen init; norms stay 1
                    param.normal_(0.0, 0.02)
    return save_model(model, path, tokenizer)
