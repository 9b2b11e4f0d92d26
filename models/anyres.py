"""LLaDA-V's `anyres_max_N` image views with `spatial_unpad` merging (LLaVA-OneVision's), on `transformers`' code.

An image becomes a base view (the whole picture resized to the tower's side) and the tiles of the
grid resolution (`image_grid_pinpoints`) that fits it best: `transformers`' LlavaOnevisionImageProcessor
makes them. After the tower and projector, the tile features are laid out as one feature grid,
unpadded to the image's aspect ratio (`unpad_image`), bilinearly shrunk when they exceed N tiles'
worth by more than 1.1 in side, and each feature row ends with the `image_newline` vector; the base
view's features come first. This is LLaDA-V's `prepare_inputs_labels_for_multimodal` order, checked
against `transformers`' LlavaOnevisionModel.pack_image_features in tests/models/test_anyres.py.
Pinpoints are stored as LLaVA writes them, [width, height]; `transformers` reads [height, width].
"""
from __future__ import annotations

import math
import re

import torch
from torch import nn
from transformers.models.llava_onevision.modeling_llava_onevision import get_anyres_image_grid_shape, unpad_image

from .config import ModelConfig

try:  # transformers >= 5 without torchvision: the PIL backend, under its own name (no fallback warning)
    from transformers import LlavaOnevisionImageProcessorPil as _OnevisionProcessor
except ImportError:  # transformers 4.x: PIL is the only backend
    from transformers import LlavaOnevisionImageProcessor as _OnevisionProcessor


def expand_pinpoints(value: object, image_size: int) -> list[list[int]]:
    """`image_grid_pinpoints` as [[width, height], ...] pixels: a list as is, or LLaVA's range string
    "(1x1),...,(6x6)" (grids of tiles of the tower's side)."""
    if isinstance(value, str):
        found = re.findall(r"\((\d+)x(\d+)\)", value)
        if not found:
            raise ValueError(f"image_grid_pinpoints={value!r}: expected a list of [width, height] or '(AxB),...,(CxD)'")
        (a, b), (c, d) = map(int, found[0]), map(int, found[-1])
        return [[i * image_size, j * image_size] for i in range(a, c + 1) for j in range(b, d + 1)]
    if not (isinstance(value, list) and value and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value)):
        raise ValueError(f"image_grid_pinpoints={value!r}: expected a list of [width, height] or '(AxB),...,(CxD)'")
    return [[int(w), int(h)] for w, h in value]


def hf_pinpoints(cfg: ModelConfig) -> list[list[int]]:
    """The pinpoints as `transformers` reads them: [height, width]."""
    return [[h, w] for w, h in cfg.image_grid_pinpoints]


def view_processor(cfg: ModelConfig) -> _OnevisionProcessor:
    """Base view + best-fit tiles, each resized (bicubic), rescaled and normalised (mean = std = 0.5) as
    LLaDA-V's SigLIP processor does; a batch is zero-padded to its largest number of views."""
    side = cfg.vision["image_size"]
    return _OnevisionProcessor(size={"height": side, "width": side}, image_grid_pinpoints=hf_pinpoints(cfg),
                               image_mean=[0.5] * 3, image_std=[0.5] * 3, do_pad=True)


def grid_shape(cfg: ModelConfig, size: tuple[int, int]) -> tuple[int, int]:
    """(rows, columns) of tiles for an image of `size` (height, width)."""
    return get_anyres_image_grid_shape(list(size), hf_pinpoints(cfg), cfg.vision["image_size"])


def view_count(cfg: ModelConfig, size: tuple[int, int]) -> int:
    rows, cols = grid_shape(cfg, size)
    return 1 + rows * cols


def pack_views(cfg: ModelConfig, features: torch.Tensor, size: tuple[int, int], newline: torch.Tensor) -> torch.Tensor:
    """[n, H] one image's prompt features from its views' features [1 + tiles, side * side, H]."""
    side = cfg.vision["image_size"] // cfg.vision["patch_size"]
    rows, cols = grid_shape(cfg, size)
    base, tiles = features[0], features[1:1 + rows * cols]
    grid = tiles.reshape(rows, cols, side, side, -1).permute(4, 0, 2, 1, 3).flatten(1, 2).flatten(2, 3)
    grid = unpad_image(grid, list(size))
    _, height, width = grid.shape
    ratio = math.sqrt(height * width / (cfg.max_tiles * side**2))
    if ratio > 1.1:  # more than N tiles' worth: shrink to about N tiles
        grid = nn.functional.interpolate(grid[None], [int(height // ratio), int(width // ratio)], mode="bilinear")[0]
    ends = newline.to(grid.dtype)[:, None, None].expand(-1, grid.shape[1], 1)
    return torch.cat([base, torch.cat([grid, ends], dim=-1).flatten(1, 2).T])


def feature_count(cfg: ModelConfig, size: tuple[int, int]) -> int:
    """How many features (prompt placeholders) an image of `size` (height, width) gives: pack_views itself
    on one-wide zero features, so the count cannot drift from the packing."""
    side = cfg.vision["image_size"] // cfg.vision["patch_size"]
    return len(pack_views(cfg, torch.zeros(view_count(cfg, size), side * side, 1), size, torch.zeros(1)))
