"""A preallocated per-layer key/value cache by slots (one slot = one sequence in flight).

Slot rows are independent: each pass writes every row's query K/V at that row's own canvas
columns (scatter), so rows at different positions share one batch and a finished row's slot is
reused without moving anyone else's K/V. Which columns a query may read is the attention mask's
business (models/decode_masks.py); the cache only stores.
"""
from __future__ import annotations

import torch


class KVCache:
    def __init__(self, num_layers: int, slots: int, num_kv_heads: int, capacity: int,
                 head_dim: int, dtype: torch.dtype, device: torch.device | str) -> None:
        shape = (slots, num_kv_heads, capacity, head_dim)
        # Zeros, not empty: a masked key's weight is exactly 0, but 0 * NaN garbage would be NaN.
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        # Where the next forward writes ([N, 1] slots, [N or 1, T] columns) and how many columns
        # it reads (None: attention reads the query's own K/V); set by `decode` / `prefill`.
        self._slots = self._cols = torch.empty(0, dtype=torch.long)
        self._read: int | None = None

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    @property
    def num_slots(self) -> int:
        return self.keys[0].shape[0]

    def decode(self, cols: torch.Tensor, read: int) -> None:
        """The next forward runs slots [0, len(cols)): row i writes its query K/V at columns
        cols[i] and attends over its cache columns [0, read)."""
        if read > self.capacity:
            raise ValueError(f"KV cache overflow: reading {read} columns of {self.capacity}")
        self._slots, self._cols = torch.arange(cols.shape[0], device=cols.device)[:, None], cols
        self._read = read

    def prefill(self, slots: torch.Tensor, cols: torch.Tensor) -> None:
        """The next forward runs rows for `slots` whose queries are their whole visible context:
        their K/V are stored at `cols` [T] and attention reads the query's own K/V."""
        self._slots, self._cols, self._read = slots[:, None], cols[None], None

    def move(self, slots: torch.Tensor) -> None:
        """Slots [0, len(slots)) take the K/V of `slots` (ascending, slots[i] >= i)."""
        n = slots.shape[0]
        for t in (*self.keys, *self.values):
            t[:n] = t[slots]

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the query's K/V [N, Hkv, T, D] and return the K/V the query attends over."""
        keys, values = self.keys[layer], self.values[layer]
        keys[self._slots, :, self._cols] = k.transpose(1, 2)
        values[self._slots, :, self._cols] = v.transpose(1, 2)
        if self._read is None:
            return k, v
        rows = self._slots.shape[0]
        return keys[:rows, :, :self._read], values[:rows, :, :self._read]
