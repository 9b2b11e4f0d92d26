"""A preallocated per-layer key/value cache.

Rows are sequences of one batch; columns are token slots. The cache only stores K/V: which
columns a query may read is decided by the attention mask the caller passes, so padding and
block structure stay the caller's business.
"""
from __future__ import annotations

import torch


class KVCache:
    def __init__(self, num_layers: int, batch: int, num_kv_heads: int, capacity: int,
                 head_dim: int, dtype: torch.dtype, device: torch.device | str) -> None:
        shape = (batch, num_kv_heads, capacity, head_dim)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the query's K/V right after the committed columns and return committed + query
        K/V as views (no concatenation copy). Only `advance` commits columns, so the query's
        uncommitted tail is simply overwritten by the next call."""
        end = self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache overflow: {self.length}+{k.shape[2]} > capacity {self.capacity}")
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def reset(self) -> None:
        self.length = 0

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only `rows` (finished sequences stop costing memory and compute)."""
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]
