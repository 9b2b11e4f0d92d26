"""Every transfer between the host and the sampler's device goes through one `HostLink`.

So the host synchronisations of a decode are countable (tests, bench/sampler.py's
host_syncs_per_pass): `read` is the only blocking device→host read. Host→device copies go through
pinned memory without blocking, and finished rows are copied out asynchronously (`copy_out`) and
only looked at after the next `read`/`drain`, which orders them on the stream.
"""
from __future__ import annotations

import torch


class HostLink:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.syncs = 0       # blocking device→host reads
        self.host_reads = 0  # reads of host copies that an earlier sync already completed

    def read(self, t: torch.Tensor) -> list:
        self.syncs += 1
        return t.tolist()

    def drain(self) -> None:
        """Wait for the async copies (one sync, at the end of a decode)."""
        if self.cuda:
            self.syncs += 1
            torch.cuda.current_stream(self.device).synchronize()

    def to_device(self, values, dtype: torch.dtype) -> torch.Tensor:
        t = torch.as_tensor(values, dtype=dtype)
        if self.cuda:
            return t.pin_memory().to(self.device, non_blocking=True)
        return t

    def copy_out(self, t: torch.Tensor) -> torch.Tensor:
        """Start copying t (a fresh tensor nobody writes again) to host; read it after a sync."""
        if not self.cuda:
            return t
        out = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        return out.copy_(t, non_blocking=True)

    def host_list(self, t: torch.Tensor) -> list:
        self.host_reads += 1
        return t.tolist()
