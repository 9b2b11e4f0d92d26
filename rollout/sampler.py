"""Block-diffusion sampling entry point (docs/design.md §5): validation, sizing, the prompt queue.

The decoding itself is rollout/engine.py (continuous batching over a slot KV cache, resident on
the model's device). Every row's result is a function of its prompt and seed alone: cached and
uncached decoding, any `max_batch_rows` and any order of the queue give the same tokens.
"""
from __future__ import annotations

import numbers
from collections.abc import Iterator

import torch

from models.config import ModelConfig
from models.fused import fuse_projections
from models.transformer import DiffusionLM

from .decode_forward import DecodeForward, decode_forward
from .device_memory import MemoryReader, read_device_memory
from .engine import SlotDecoder
from .params import SamplingParams
from .rng import SEED_LIMIT
from .sizing import plan_decode, stable_capacity
from .slot_table import PromptItem, canvas_of
from .trajectory import Trajectory


def validate_prompts(model: DiffusionLM, prompts: list[list[int]], params: SamplingParams,
                     images: list[torch.Tensor | None] | None = None) -> None:
    cfg = model.config
    if not prompts:
        raise ValueError("generate() got no prompts")
    _check_images(cfg, prompts, images)
    block_causal = cfg.attention == "block_causal"
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty: a prompt needs at least one token")
        if len(p) + params.max_new_tokens + params.block_size > cfg.max_position_embeddings:
            raise ValueError(
                f"prompt {i} has {len(p)} tokens; with max_new_tokens={params.max_new_tokens} and "
                f"block_size={params.block_size} it exceeds the model context "
                f"(max_position_embeddings={cfg.max_position_embeddings})")
        if cfg.mask_token_id in p:
            raise ValueError(f"prompt {i} contains the mask token id {cfg.mask_token_id}")
        if params.cache_tokens is not None:
            if len(p) > params.cache_tokens:
                raise ValueError(f"prompt {i} has {len(p)} tokens, more than the KV cache holds per row "
                                 f"(rollout.cache_tokens={params.cache_tokens})")
            need = canvas_of(len(p), params, block_causal)[1]
            if need > params.cache_tokens:
                raise ValueError(f"prompt {i} ({len(p)} tokens) with max_new_tokens={params.max_new_tokens} needs a "
                                 f"canvas of {need} columns, more than rollout.cache_tokens={params.cache_tokens}")
    _check_stop_ids(cfg, params)
    if cfg.attention == "full" and params.max_new_tokens % params.block_size:
        raise ValueError(
            f"rollout.block_size={params.block_size} must divide max_new_tokens={params.max_new_tokens} "
            f"for full-attention ({cfg.family}) semi-AR decoding")


def _check_stop_ids(cfg: ModelConfig, params: SamplingParams) -> None:
    outside = [t for t in params.stop_token_ids if t >= cfg.vocab_size]
    if outside:  # such a stop id can never be sampled: the rows would silently run to max_new_tokens
        raise ValueError(f"rollout.stop_token_ids {outside} are outside the vocabulary (size {cfg.vocab_size})")


def _check_images(cfg: ModelConfig, prompts: list[list[int]], images: list[torch.Tensor | None] | None) -> None:
    if images is not None and len(images) != len(prompts):
        raise ValueError(f"generate() got {len(images)} images for {len(prompts)} prompts")
    for i, p in enumerate(prompts):
        if p:
            _check_image(cfg, i, p, None if images is None else images[i])


def _check_image(cfg: ModelConfig, i: int, prompt: list[int], image: torch.Tensor | None) -> None:
    """A prompt's image placeholders (ids >= vocab_size, models/vision.py) need its image, and an image
    needs a vision-language model."""
    if image is not None and not cfg.image_tokens:
        raise ValueError(f"prompt {i} has an image, but model family {cfg.family!r} takes no images")
    top = max(prompt)
    if min(prompt) < 0:  # the embedding lookup would fail deep in the first prefill
        raise ValueError(f"prompt {i} has id {min(prompt)}: token ids must be >= 0")
    if top >= cfg.vocab_size + cfg.image_tokens:
        raise ValueError(f"prompt {i} has id {top}, outside the vocabulary ({cfg.vocab_size}) and the "
                         f"{cfg.image_tokens} image placeholder ids after it")
    if top >= cfg.vocab_size and image is None:
        raise ValueError(f"prompt {i} has image placeholder ids (>= vocab_size {cfg.vocab_size}) but no image")
    if image is not None and tuple(image.shape) != (cfg.image_tokens, cfg.hidden_size):
        raise ValueError(f"prompt {i}'s image features have shape {tuple(image.shape)}, not "
                         f"{(cfg.image_tokens, cfg.hidden_size)}")


def validate_seeds(prompts: list[list[int]], seeds: list[int]) -> None:
    """One 32-bit seed per prompt: a short list would drop prompts, a long one hide a misalignment."""
    if len(seeds) != len(prompts):
        raise ValueError(f"generate() got {len(seeds)} seeds for {len(prompts)} prompts: it needs one per prompt")
    for i, s in enumerate(seeds):
        if not (isinstance(s, numbers.Integral) and 0 <= s < SEED_LIMIT):
            raise ValueError(f"seeds[{i}]={s!r}: a row seed is an integer in [0, 2**32)")


def default_seeds(params: SamplingParams, n: int) -> list[int]:
    # Masked to 32 bits: the uniforms they give are unchanged (rng.uniforms hashes the low 32 bits).
    return [(params.seed * 1000003 + i) % SEED_LIMIT for i in range(n)]


def fuses(model: DiffusionLM) -> bool:
    """Whether a decode fuses the q/k/v and gate/up projections (models/fused.py): on a GPU. On a
    CPU the fused matmuls measured slower at decode row counts (README)."""
    return model.embed_tokens.weight.device.type == "cuda"


def stream(model: DiffusionLM, prompts: list[list[int]], params: SamplingParams, seeds: list[int],
           stats: dict | None = None, forward: DecodeForward | None = None,
           memory: MemoryReader = read_device_memory,
           images: list[torch.Tensor | None] | None = None) -> Iterator[tuple[int, Trajectory]]:
    """Decode prompts taken in order from a queue; yields (prompt index, trajectory) as rows finish.
    `stats`, when given, receives the decode's passes, prefill forwards and host synchronisations.
    `forward` runs the decode passes (default: what params.compile / params.cuda_graphs ask for).
    `memory` reads the model's device for the sizing (rollout/sizing.py; no reading, as on a CPU: the decode
    runs min(max_batch_rows, prompts) rows). `images`: per prompt, its image features (rollout/images.py) or None.
    """
    validate_prompts(model, prompts, params, images)
    validate_seeds(prompts, seeds)
    if fuses(model):
        # Again after a wake or reload gave the weights their own memory back. Outside inference mode
        # (`generate`): the fused buffer becomes the parameters' memory, which weight syncs copy into.
        with torch.inference_mode(False):
            fuse_projections(model)
    forward = forward or decode_forward(model, params)
    block_causal = model.config.attention == "block_causal"
    capacity = params.cache_tokens or max(canvas_of(len(p), params, block_causal)[1] for p in prompts)
    if forward.fixed_shapes and params.cache_tokens is None:  # a width shared by shards: no recompile
        capacity = stable_capacity(capacity, params, model.config)
    plan = plan_decode(model, params, capacity, min(params.max_batch_rows, len(prompts)),
                       memory(model.embed_tokens.weight.device))
    decoder = SlotDecoder(model, params, capacity, plan.slots, forward, plan.prefill_tokens)
    images = images or [None] * len(prompts)
    yield from decoder.run(PromptItem(i, p, s, im) for i, (p, s, im) in enumerate(zip(prompts, seeds, images)))
    if stats is not None:
        stats.update(passes=decoder.runner.passes, prefill_forwards=decoder.runner.prefill_forwards,
                     host_syncs=decoder.link.syncs, host_reads=decoder.link.host_reads)


def generate(model: DiffusionLM, prompts: list[list[int]], params: SamplingParams,
             seeds: list[int] | None = None, stats: dict | None = None,
             forward: DecodeForward | None = None, memory: MemoryReader = read_device_memory,
             images: list[torch.Tensor | None] | None = None) -> list[Trajectory]:
    """Sample one response per prompt (in prompt order). `seeds` (one 32-bit int per row) fix each
    row's randomness independently of the batch; default: the row index mixed with params.seed.
    `stats`, `forward`, `memory`, `images`: as for `stream`."""
    seeds = seeds if seeds is not None else default_seeds(params, len(prompts))
    out: list[Trajectory | None] = [None] * len(prompts)
    # Inference mode, not no_grad: tensors made here carry no version counters or autograd metadata,
    # a good part of a small op's cost (on a CPU 1.09x tokens/s at batch 1, 1.04x at batch 32).
    with torch.inference_mode():
        for i, traj in stream(model, prompts, params, seeds, stats, forward, memory, images):
            out[i] = traj
    return [t for t in out if t is not None]
