"""One compact decoder (Qwen3/Qwen2/LLaDA shapes) with explicit positions, masks and KV cache.

Module names follow the Qwen layout (`layers.N.self_attn.q_proj`, ...) so Qwen-family checkpoints
map by prefix and LLaDA maps by a fixed rename table (models/checkpoint.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import AttnMask, attend
from .config import ModelConfig
from .fused import project
from .kv_cache import KVCache

if TYPE_CHECKING:
    from .vision import RowImages


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalised in fp32, then scaled in the model's dtype (as Qwen's reference does); one fused
        # op where the device has one (CUDA), one dispatch instead of five on a CPU.
        return self.weight * F.rms_norm(x.float(), x.shape[-1:], eps=self.eps).to(x.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on the half-split layout: x * cos + [-x2, x1] * sin, with `Rotary`'s signed sin
    ([-sin, sin]) so the swap of halves is one roll: the same products, two fewer kernels."""
    return x * cos + torch.roll(x, x.shape[-1] // 2, dims=-1) * sin


class Rotary(nn.Module):
    """RoPE tables computed in fp32 on every call: no buffer, so casting the model to bf16
    cannot degrade the frequencies (that loses precision at long positions). The sin table
    carries the rotation's signs for `rotate`: [-sin, sin] over the two halves."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.head_dim, self.theta = head_dim, theta

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        exponent = torch.arange(0, self.head_dim, 2, dtype=torch.int64, device=position_ids.device).float()
        inv_freq = 1.0 / (self.theta ** (exponent / self.head_dim))
        freqs = position_ids[..., None].float() * inv_freq  # [N, T, D/2]
        cos, sin = freqs.cos(), freqs.sin()
        return torch.cat((cos, cos), dim=-1).to(dtype)[:, None], torch.cat((-sin, sin), dim=-1).to(dtype)[:, None]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.num_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.hidden_size, bias=False)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: AttnMask,
                cache: KVCache | None, layer: int) -> torch.Tensor:
        n, t, _ = x.shape
        q, k, v = project(x, (self.q_proj, self.k_proj, self.v_proj))
        q = q.view(n, t, self.num_heads, self.head_dim)
        k = k.view(n, t, self.num_kv_heads, self.head_dim)
        v = v.view(n, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)  # [N, H, T, D]
        if cache is not None:
            k, v = cache.extend(layer, k, v)
        out = attend(q, k, v, mask, enable_gqa=self.num_heads != self.num_kv_heads)
        return self.o_proj(out.transpose(1, 2).reshape(n, t, -1))


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    # Its own frame so gate and up (one fused matmul's output) are freed before down_proj runs.
    return F.silu(gate) * up


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(swiglu(*project(x, (self.gate_proj, self.up_proj))))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, cache, layer):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


def synced_state(model: nn.Module, keep_vars: bool = False) -> dict[str, torch.Tensor]:
    """What a weight sync carries, for the sender and every receiver alike: the model's state less the
    modules it keeps frozen (`DiffusionLM.frozen`; any other module: its whole state)."""
    frozen = getattr(model, "frozen", ())
    return {name: t for name, t in model.state_dict(keep_vars=keep_vars).items() if not name.startswith(frozen)}


class DiffusionLM(nn.Module):
    """Decoder used for every family; `cfg.family` only changes norms, biases and logit shift."""

    # State-dict prefixes of modules that neither train nor travel in a weight sync (every holder
    # has them from the checkpoint), e.g. a frozen vision tower (models/vision.py).
    frozen: tuple[str, ...] = ()

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary = Rotary(cfg.head_dim, cfg.rope_theta)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.gradient_checkpointing = False

    def embed(self, input_ids: torch.Tensor, image_features: torch.Tensor | None = None) -> torch.Tensor:
        """Input embeddings [N, T, H]. With `image_features` [N, image_tokens, H] (row n's image), an
        id vocab_size + j is row n's image feature j (a prompt's image placeholders, models/vision.py);
        text ids embed exactly as without it."""
        if image_features is None:
            return self.embed_tokens(input_ids)
        image = input_ids >= self.config.vocab_size
        x = self.embed_tokens(torch.where(image, 0, input_ids))
        slot = (input_ids - self.config.vocab_size).clamp(0, image_features.shape[1] - 1)
        features = image_features.gather(1, slot[..., None].expand(-1, -1, x.shape[-1]))
        return torch.where(image[..., None], features.to(x.dtype), x)

    def row_image_features(self, images: RowImages) -> torch.Tensor:
        """[R, image_tokens, H] features of each row's image; only vision-language models have them."""
        raise ValueError(f"model family {self.config.family!r} takes no images (prompts with images need a "
                         "vision-language model such as model=llada_v)")

    def hidden_states(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
                      attn_mask: AttnMask = None, kv_cache: KVCache | None = None,
                      image_features: torch.Tensor | None = None) -> torch.Tensor:
        """Final-normed hidden states [N, T, H].

        attn_mask: bool [N, T, S] (True = may attend) over the keys the layer attends to (the
        query's own, or what `kv_cache.extend` returns); a `MaskSpec` describing it
        (models/attention.py); None = attend all. `kv_cache` was told by the caller where this
        forward's K/V go (KVCache.decode / prefill). `image_features`: see `embed`.
        """
        x = self.embed(input_ids, image_features)
        cos, sin = self.rotary(position_ids, x.dtype)
        for i, layer in enumerate(self.layers):
            if self.gradient_checkpointing and self.training and kv_cache is None:
                x = checkpoint(layer, x, cos, sin, attn_mask, None, i, use_reentrant=False)
            else:
                x = layer(x, cos, sin, attn_mask, kv_cache, i)
        return self.norm(x)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
                attn_mask: AttnMask = None, kv_cache: KVCache | None = None,
                logits_at: torch.Tensor | None = None,
                head: Callable[[torch.Tensor, nn.Module], Any] | None = None,
                images: RowImages | None = None) -> Any:
        """Logits [N, T, V], or [M, V] at the M query slots where bool `logits_at` [N, T] is True,
        or at the M flat (row * T + column) indices of an integer `logits_at` [M] (no host sync).

        Only the asked-for rows go through the vocabulary projection: full-vocab logits at every
        position are the main memory cost of training at real vocab sizes. `head(h, lm_head)`
        replaces the projection (e.g. the learner's chunked log-probs); it runs inside forward so
        wrappers (DDP, ZeRO-3 gathering the head) see it. `images`: each row's image, encoded here
        (so the learner's gradient reaches the projector).
        """
        features = None if images is None else self.row_image_features(images)
        h = self.hidden_states(input_ids, position_ids, attn_mask, kv_cache, features)
        if logits_at is not None:
            h = h[logits_at] if logits_at.dtype == torch.bool else h.flatten(0, 1)[logits_at]
        return self.lm_head(h) if head is None else head(h, self.lm_head)

    def restore_buffers(self) -> None:
        """Recompute the non-persistent buffers after a meta build or `to_empty` (the decoder has none)."""

    def new_kv_cache(self, slots: int, capacity: int) -> KVCache:
        p = self.embed_tokens.weight
        return KVCache(self.config.num_layers, slots, self.config.num_kv_heads, capacity,
                       self.config.head_dim, p.dtype, p.device)
