"""Random-weight models at real checkpoint shapes for the sampler benchmarks (torch only)."""
from __future__ import annotations

import torch

from models.config import ModelConfig
from models.tiny import synthetic_config
from models.transformer import DiffusionLM

# Public config.json shapes of the SDAR checkpoints (ids past the ordinary vocabulary are special).
SHAPES: dict[str, dict[str, int]] = {
    "sdar_1_7b": dict(hidden_size=2048, intermediate_size=6144, num_layers=28, num_heads=16, num_kv_heads=8,
                      head_dim=128, vocab_size=151936),
    "sdar_4b": dict(hidden_size=2560, intermediate_size=9728, num_layers=36, num_heads=32, num_kv_heads=8,
                    head_dim=128, vocab_size=151936),
}


def random_model(shape: dict[str, int], block: int, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, seed: int = 0) -> DiffusionLM:
    """An SDAR-family model with N(0, 0.02) weights built directly on `device` in `dtype`. Mask and
    EOS are the last two ids, so random prompts below them are ordinary tokens."""
    cfg = synthetic_config(max_position_embeddings=8192, block_size=block, **shape)
    torch.manual_seed(seed)
    with torch.device(device):
        model = DiffusionLM(cfg).to(dtype).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.02)
    return model


def random_prompts(cfg: ModelConfig, batch: int, length: int, seed: int = 1) -> list[list[int]]:
    """Ids below EOS and mask: special ids come after the ordinary ones (synthetic model, Qwen)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, min(cfg.eos_token_id, cfg.mask_token_id), (batch, length), generator=g).tolist()
