"""The LLaDA-V-shaped vision-language model: a SigLIP tower, a two-layer MLP projector and our decoder.

An image enters a prompt as placeholder ids vocab_size + j (j = 0, 1, ..., one per image feature, in
feature order); `DiffusionLM.embed` swaps each for the row's projected feature j,
so everything after the embedding is the text model. The tower is `transformers`' SiglipVisionModel
as LLaDA-V stores it: its last encoder layer already removed and no pooling head, features read
from the last stored layer before the post-layernorm (LLaDA-V's `mm_vision_select_layer = -2` of the
full tower). `image_aspect_ratio` "square" gives one view at the tower's resolution (LLaVA's "flat"
merge, image_tokens features); "anyres_max_N" a base view plus tiles merged "spatial_unpad" with the
`image_newline` vector (models/anyres.py), a count that depends on the image's size. Features are
padded with zeros to `image_tokens` per image, so rows, slots and caches keep one shape.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel

from . import anyres
from .config import ModelConfig
from .transformer import DiffusionLM

try:  # transformers >= 5 without torchvision: the PIL backend, under its own name (no fallback warning)
    from transformers import SiglipImageProcessorPil as _SiglipProcessor
except ImportError:  # transformers 4.x: PIL is the only backend
    from transformers import SiglipImageProcessor as _SiglipProcessor

# The SiglipVisionConfig fields ModelConfig.vision holds (the rest keep transformers' defaults).
VISION_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
               "image_size", "patch_size", "hidden_act", "layer_norm_eps")


def siglip_config(vision: dict[str, Any]) -> SiglipVisionConfig:
    return SiglipVisionConfig(**{k: vision[k] for k in VISION_KEYS}, vision_use_head=False)


def vision_dict(config: dict[str, Any]) -> dict[str, Any]:
    """ModelConfig.vision from a SiglipVisionConfig dict: VISION_KEYS, transformers' defaults filled in."""
    full = SiglipVisionConfig(**{k: config[k] for k in VISION_KEYS if k in config}).to_dict()
    return {k: full[k] for k in VISION_KEYS}


@dataclass
class RowImages:
    """The images of a batch of rows: each distinct image once, and which one each row shows."""
    pixel_values: torch.Tensor  # [U, C, S, S] (square) or [U, V, C, S, S] (anyres views) preprocessed
    index: torch.Tensor         # [R] long: row r's image; -1 for a text row
    image_sizes: torch.Tensor | None = None  # [U, 2] (height, width): anyres images need them

    def to(self, device: torch.device | str) -> RowImages:
        sizes = None if self.image_sizes is None else self.image_sizes.to(device)
        return RowImages(self.pixel_values.to(device), self.index.to(device), sizes)


class DiffusionVLM(DiffusionLM):
    """DiffusionLM plus `vision_tower` (SiglipVisionModel), `mm_projector` (Linear, GELU, Linear) and, for
    anyres views, `image_newline` (the row separator; it trains with the projector)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.vision_tower = SiglipVisionModel(siglip_config(cfg.vision))
        width = cfg.vision["hidden_size"]
        self.mm_projector = nn.Sequential(nn.Linear(width, cfg.hidden_size), nn.GELU(),
                                          nn.Linear(cfg.hidden_size, cfg.hidden_size))
        if cfg.max_tiles:  # LLaVA's init: scaled as the embeddings are
            self.image_newline = nn.Parameter(torch.randn(cfg.hidden_size) * cfg.hidden_size**-0.5)

    def freeze_vision(self) -> None:
        """model.train_vision=false: the tower neither trains nor syncs (the projector and decoder do)."""
        self.vision_tower.requires_grad_(False)
        self.frozen = ("vision_tower.",)

    def restore_buffers(self) -> None:
        """SigLIP's patch position ids: a non-persistent buffer no checkpoint or weight sync carries."""
        for module in self.vision_tower.modules():
            if isinstance(getattr(module, "position_ids", None), torch.Tensor) and hasattr(module, "num_positions"):
                device = module.position_embedding.weight.device
                module.register_buffer("position_ids", torch.arange(module.num_positions, device=device)[None],
                                       persistent=False)

    def encode_images(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor | None = None) -> torch.Tensor:
        """[U, image_tokens, H] projected features of preprocessed images (ImagePreprocessor): square views
        [U, C, S, S], or anyres views [U, V, C, S, S] with `image_sizes` [U, 2], each image's packed
        features zero-padded to image_tokens."""
        if not self.config.max_tiles:
            return self._project(pixel_values)
        if image_sizes is None:
            raise ValueError(f"image_aspect_ratio={self.config.image_aspect_ratio!r}: encode_images needs image_sizes")
        sizes = [tuple(s) for s in image_sizes.tolist()]
        counts = [anyres.view_count(self.config, s) for s in sizes]
        views = self._project(torch.cat([px[:n] for px, n in zip(pixel_values, counts)]))
        packed = [anyres.pack_views(self.config, f, s, self.image_newline) for f, s in zip(views.split(counts), sizes)]
        return torch.stack([nn.functional.pad(p, (0, 0, 0, self.config.image_tokens - len(p))) for p in packed])

    def _project(self, views: torch.Tensor) -> torch.Tensor:
        """[V, patches, H] projected patch features of views [V, C, S, S]."""
        dtype = self.mm_projector[0].weight.dtype
        out = self.vision_tower(pixel_values=views.to(dtype), output_hidden_states=True)
        return self.mm_projector(out.hidden_states[-1])

    def row_image_features(self, images: RowImages) -> torch.Tensor:
        """[R, image_tokens, H]: row r's image features, zeros for a text row (index -1 reads the zero row
        appended last). With no image at all (U = 0) the tower and projector still run, on one blank
        picture whose features are dropped (SigLIP takes no empty batch), and stay in the graph: every
        learner rank then runs the same modules (ZeRO-3 gathers them in forward and reduces their
        gradients in backward, collectives that every rank must join)."""
        if len(images.pixel_values):
            features = self.encode_images(images.pixel_values, images.image_sizes)
        else:
            blank = ImagePreprocessor(self.config).blank().to(images.index.device)
            features = self.encode_images(blank.pixel_values, blank.image_sizes)[:0]
        return torch.cat([features, features.new_zeros(1, *features.shape[1:])])[images.index]


def build_model(cfg: ModelConfig) -> DiffusionLM:
    """The model class of `cfg`: a vision-language model when it has a vision config."""
    return DiffusionVLM(cfg) if cfg.vision is not None else DiffusionLM(cfg)


class ImagePreprocessor:
    """Resize (bicubic) to the tower's resolution, rescale to [0, 1] and normalise (mean = std = 0.5),
    as LLaDA-V's SigLIP processor does: `transformers`' SiglipImageProcessor for one square view, its
    LlavaOnevisionImageProcessor for anyres views (models/anyres.py)."""

    def __init__(self, cfg: ModelConfig) -> None:
        if cfg.vision is None:
            raise ValueError(f"model family {cfg.family!r} takes no images")
        self.cfg = cfg
        size = cfg.vision["image_size"]
        self.processor = (anyres.view_processor(cfg) if cfg.max_tiles
                          else _SiglipProcessor(size={"height": size, "width": size}))

    def __call__(self, images: list[Image.Image]) -> RowImages:
        """The images' float32 pixel values and sizes, image u shown by row u."""
        rgb = [im.convert("RGB") for im in images]
        pixels = self.processor(images=rgb, return_tensors="pt")["pixel_values"]
        sizes = torch.tensor([[im.height, im.width] for im in rgb], dtype=torch.long).view(-1, 2)
        return RowImages(pixels, torch.arange(len(rgb)), sizes)

    def blank(self) -> RowImages:
        """One black picture of the tower's side (what a forward with no image encodes)."""
        size = self.cfg.vision["image_size"]
        return self([Image.new("RGB", (size, size))])


def image_placeholders(cfg: ModelConfig, image: Image.Image | None = None) -> list[int]:
    """The ids `image` takes in a prompt (empty for a text-only model); anyres views need the image, whose
    size sets the count."""
    if not cfg.max_tiles:
        return list(range(cfg.vocab_size, cfg.vocab_size + cfg.image_tokens))
    if image is None:
        raise ValueError(f"image_aspect_ratio={cfg.image_aspect_ratio!r}: an image's placeholder count needs the image")
    return list(range(cfg.vocab_size, cfg.vocab_size + anyres.feature_count(cfg, (image.height, image.width))))
