"""The one model config that covers every family we run (docs/design.md §4)."""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

Family = Literal["sdar", "llada", "dream", "tiny", "llada_v"]
Attention = Literal["block_causal", "full"]

# The `model.dtype` strings a run config accepts, as torch dtypes.
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Per family: (attention kind, logits shifted?, q/k RMSNorm?, q/k/v bias?)
FAMILY_TRAITS: dict[str, tuple[Attention, bool, bool, bool]] = {
    "sdar": ("block_causal", False, True, False),
    "tiny": ("block_causal", False, True, False),
    "llada": ("full", False, False, False),
    "llada_v": ("full", False, False, False),  # LLaDA-V: the LLaDA decoder behind a SigLIP tower
    "dream": ("full", True, False, True),
}

VISION_FAMILIES = frozenset({"llada_v"})


def family_attention(family: str) -> Attention:
    """How a family attends, in training and sampling (block-causal families decode in the blocks
    they were trained with)."""
    return FAMILY_TRAITS[family][0]


@dataclass
class ModelConfig:
    family: Family
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    block_size: int = 4
    mask_token_id: int = 0
    eos_token_id: int = 1
    pad_token_id: int = 1
    # Extra ids that end a response like EOS does (e.g. <|im_end|> and <|endoftext|> for SDAR).
    stop_token_ids: list[int] = field(default_factory=list)
    # Vision-language models (family llada_v; in memory any family): the stored SigLIP tower's shape
    # (models/vision.py VISION_KEYS); None for text-only models.
    vision: dict[str, Any] | None = None
    # How an image becomes views (LLaDA-V's config keys, models/anyres.py): "square" (one view at the
    # tower's side, LLaVA's flat merge) or "anyres_max_<N>" (a base view plus the best-fitting tiles of
    # `image_grid_pinpoints`, [width, height] pixels, merged spatial_unpad with an image_newline).
    image_aspect_ratio: str = "square"
    image_grid_pinpoints: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.family not in FAMILY_TRAITS:
            raise ValueError(f"model.family={self.family!r}: allowed values are {sorted(FAMILY_TRAITS)}")
        if self.family in VISION_FAMILIES and self.vision is None:
            raise ValueError(f"model.family={self.family!r} is a vision-language family: it needs a vision config")
        if self.image_aspect_ratio != "square" and not re.fullmatch(r"anyres_max_[1-9]\d*", self.image_aspect_ratio):
            raise ValueError(f"image_aspect_ratio={self.image_aspect_ratio!r} is not supported: allowed values are "
                             "'square' and 'anyres_max_<N>' (N >= 1)")
        if self.max_tiles and not self.image_grid_pinpoints:
            raise ValueError(f"image_aspect_ratio={self.image_aspect_ratio!r} needs image_grid_pinpoints")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
        if self.block_size < 1:
            raise ValueError(f"block_size={self.block_size} must be >= 1")

    @property
    def attention(self) -> Attention:
        return family_attention(self.family)

    @property
    def shift_logits(self) -> bool:
        """Dream predicts token i from position i-1; the others predict it in place."""
        return FAMILY_TRAITS[self.family][1]

    @property
    def qk_norm(self) -> bool:
        return FAMILY_TRAITS[self.family][2]

    @property
    def qkv_bias(self) -> bool:
        return FAMILY_TRAITS[self.family][3]

    @property
    def max_tiles(self) -> int:
        """N of image_aspect_ratio anyres_max_N; 0 for one square view."""
        return 0 if self.image_aspect_ratio == "square" else int(self.image_aspect_ratio.rsplit("_", 1)[1])

    @property
    def image_tokens(self) -> int:
        """The most features one image can contribute to a prompt (0: a text-only model). Prompt ids
        vocab_size + j stand for the image's j-th feature (models/vision.py). One square view gives
        exactly this many; an anyres image gives its own count (models/anyres.py feature_count), at most
        the base view, N tiles' worth of grid features with the 1.1 slack, and one newline per row."""
        if self.vision is None:
            return 0
        side = self.vision["image_size"] // self.vision["patch_size"]
        if not self.max_tiles:
            return side**2
        unit = self.vision["image_size"] / side
        grids = [(math.ceil(h / unit), math.ceil(w / unit)) for w, h in self.image_grid_pinpoints]
        slack = math.floor(1.21 * self.max_tiles * side**2) + 1
        return side**2 + max(min(rows * cols, slack) + rows for rows, cols in grids)

    def to_dict(self) -> dict:
        return asdict(self)
