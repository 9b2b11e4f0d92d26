"""One reading of a device's memory, the only input of the rollout's memory sizing (rollout/sizing.py).

`torch.cuda.mem_get_info`'s "free" does not count what PyTorch's caching allocator holds but no
longer uses (a finished decode's KV cache, its pass workspaces): sizing from it alone gives far
fewer rows on every generate() after the first. The reading therefore carries torch's own figures
too, and `available` counts the cached-but-unused bytes: the allocator hands its unused cached
segments back to the device before it fails an allocation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class MemoryReading:
    total: int      # the device's memory
    free: int       # not held by anyone (this process's torch cache counts as held)
    reserved: int   # held by this process's caching allocator (in use or cached)
    allocated: int  # in use by this process's tensors

    def __post_init__(self) -> None:
        if not 0 <= self.allocated <= self.reserved or not 0 <= self.free <= self.total:
            raise ValueError(f"inconsistent memory reading: {self}")

    @property
    def available(self) -> int:
        """Bytes this process could allocate: free, plus torch's cached-but-unused blocks."""
        return self.free + self.reserved - self.allocated


MemoryReader = Callable[[torch.device], MemoryReading | None]


def read_device_memory(device: torch.device) -> MemoryReading | None:
    """The reading of a CUDA device; None elsewhere (a CPU decode is not sized)."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    return MemoryReading(total=total, free=free, reserved=torch.cuda.memory_reserved(device),
                         allocated=torch.cuda.memory_allocated(device))
