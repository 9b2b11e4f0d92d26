"""`bench/sampler.py --images N`: what an image costs the sampler. One JSON line.

A LLaDA-V-shaped model (random weights: the sampler's decoder at --hidden/--layers/--vocab, full
attention, behind a 4-layer SigLIP tower with N image tokens) decodes the same batch twice: prompts of
--prompt tokens of which N are one image's placeholders, and text prompts of the same --prompt tokens.
Both make exactly --new tokens per row (EOS ignored, static strategy), so both run the same passes at
the same shapes; the image's features sit in the slot table like token ids (rollout/images.py).

- seconds_per_pass_text / _image: decode seconds per denoising pass, the image features encoded before;
  image_over_text: their ratio (the target: within 10% of 1).
- image_with_encode_over_text: the same with the image encoding (preprocess, tower, projector, once per
  distinct image) counted in the image decode's time; encode_s: that encoding alone.

    python bench/sampler.py --images 256 --prompt 384 --new 64 --batch 8 --repeats 3
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.common import fastest
from models.tiny import synthetic_config
from models.vision import DiffusionVLM, image_placeholders
from rollout.images import encode_prompt_images
from rollout.params import SamplingParams
from rollout.sampler import generate

TOWER = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4, num_channels=3,
             patch_size=8, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)


def image_figures(args: Any) -> dict[str, Any]:
    side = math.isqrt(args.images)
    if side * side != args.images or args.images >= args.prompt:
        raise SystemExit(f"--images {args.images}: a square number of image tokens below --prompt {args.prompt}")
    torch.manual_seed(0)
    heads = args.hidden // 64
    cfg = synthetic_config(args.vocab, family="llada_v", hidden_size=args.hidden, intermediate_size=args.hidden * 3,
                           num_layers=args.layers, num_heads=heads, num_kv_heads=max(heads // 2, 1), head_dim=64,
                           max_position_embeddings=4096, block_size=args.block or 4,
                           vision=dict(TOWER, image_size=8 * side))
    model = DiffusionVLM(cfg).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02) if p.dim() > 1 else None
    batch, new = args.batch or 8, args.new or 64
    g = torch.Generator().manual_seed(1)
    text = [torch.randint(2, cfg.vocab_size - 2, (args.prompt,), generator=g).tolist() for _ in range(batch)]
    cut = (args.prompt - args.images) // 2
    placeholders = image_placeholders(cfg)
    with_image = [t[:cut] + placeholders + t[cut:args.prompt - args.images] for t in text]
    rng = np.random.default_rng(2)
    pictures = [Image.fromarray(rng.integers(0, 256, (8 * side, 8 * side, 3), dtype=np.uint8)) for _ in range(batch)]
    params = SamplingParams(block_size=cfg.block_size, steps_per_block=args.steps, strategy="static",
                            max_new_tokens=new, ignore_eos=True, temperature=1.0)
    features = encode_prompt_images(model, pictures)
    generate(model, [p[:8] for p in text[:2]], params.model_copy(update={"max_new_tokens": 8}))  # warm-up
    stats: dict[str, dict[str, int]] = {"text": {}, "image": {}}

    def encode_and_decode() -> None:
        generate(model, with_image, params, images=encode_prompt_images(model, pictures))

    seconds, _ = fastest({"text": lambda: generate(model, text, params, stats=stats["text"]),
                          "image": lambda: generate(model, with_image, params, stats=stats["image"], images=features),
                          "image_with_encode": encode_and_decode}, args.repeats)
    start = time.perf_counter()
    encode_prompt_images(model, pictures)
    encode_s = time.perf_counter() - start
    passes = stats["text"]["passes"]
    if stats["image"]["passes"] != passes:
        raise RuntimeError(f"text and image decodes ran {passes} and {stats['image']['passes']} passes")
    return {"seconds_per_pass_text": round(seconds["text"] / passes, 5),
            "seconds_per_pass_image": round(seconds["image"] / passes, 5),
            "image_over_text": round(seconds["image"] / seconds["text"], 3),
            "image_with_encode_over_text": round(seconds["image_with_encode"] / seconds["text"], 3),
            "encode_s": round(encode_s, 4), "passes": passes, "image_tokens": args.images, "prompt": args.prompt,
            "batch": batch, "new_tokens": new, "block": cfg.block_size, "steps_per_block": args.steps,
            "family": cfg.family, "hidden": args.hidden, "layers": args.layers, "vocab": cfg.vocab_size,
            "tower_params_m": round(sum(p.numel() for p in model.vision_tower.parameters()) / 1e6, 2),
            "threads": args.threads, "repeats": args.repeats,
            "seconds": {k: round(v, 3) for k, v in seconds.items()}}
