"""Learner rank 0 → rollout workers weight transfer (DESIGN §8), behind one small contract.

Every transport moves the same thing: the state dict flattened into byte buckets plus a small
index (name, dtype, shape, bucket, offset). The sender publishes a `WeightsHandle` (picklable,
tiny); each receiver turns the handle back into tensors and copies them into its model.

- shared_memory: one copy into a /dev/shm file; receivers on the same node copy out of a mmap.
- collective: a dedicated gloo group (own TCP store/port) between rank 0 and remote workers;
  one broadcast per bucket.
- object_store: one ray.put of the buckets; receivers ray.get them (zero-copy numpy views).
"""
from __future__ import annotations

import datetime
import os
import socket
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import ray
import torch
import torch.distributed as dist

Kind = Literal["shared_memory", "collective", "object_store"]


@dataclass(frozen=True)
class TensorMeta:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    bucket: int
    offset: int  # bytes into the bucket
    nbytes: int


@dataclass
class WeightsHandle:
    """What crosses from the learner to the driver to each rollout worker (never the tensors)."""
    kind: Kind
    version: int
    index: list[TensorMeta]
    bucket_sizes: list[int]
    shm_path: str | None = None  # shared_memory
    refs: list[Any] = field(default_factory=list)  # object_store: [ObjectRef of the bucket list]


def plan_buckets(state: dict[str, torch.Tensor], bucket_bytes: int) -> tuple[list[TensorMeta], list[int]]:
    """Assign tensors to buckets of at most `bucket_bytes` (a larger tensor gets its own bucket)."""
    index, sizes, cur = [], [0], 0
    for name, t in state.items():
        n = t.numel() * t.element_size()
        if sizes[cur] and sizes[cur] + n > bucket_bytes:
            sizes.append(0)
            cur += 1
        offset = sizes[cur] + (-sizes[cur]) % 8  # 8-byte aligned views for every dtype
        index.append(TensorMeta(name, t.dtype, tuple(t.shape), cur, offset, n))
        sizes[cur] = offset + n
    return index, sizes


def pack(state: dict[str, torch.Tensor], index: list[TensorMeta], buckets: list[torch.Tensor]) -> None:
    """Copy every tensor's bytes into its bucket slot (buckets: uint8, preallocated)."""
    for m in index:
        src = state[m.name].detach().contiguous().reshape(-1).view(torch.uint8)
        buckets[m.bucket][m.offset:m.offset + m.nbytes].copy_(src)


def unpack(buckets: list[torch.Tensor], index: list[TensorMeta]) -> dict[str, torch.Tensor]:
    """Views into the buckets, one per tensor (no copy)."""
    return {m.name: buckets[m.bucket][m.offset:m.offset + m.nbytes].view(m.dtype).view(m.shape) for m in index}


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy received tensors into the model's parameters/buffers in place (dtype cast if needed)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise KeyError(f"weight sync is missing tensors {missing[:5]}{'...' if len(missing) > 5 else ''}")
    with torch.no_grad():
        for name, t in own.items():
            t.copy_(state[name])


class Sender(Protocol):
    def publish(self, state: dict[str, torch.Tensor], version: int) -> WeightsHandle: ...


class Receiver(Protocol):
    def receive(self, handle: WeightsHandle) -> tuple[dict[str, torch.Tensor], int]: ...


def _shm_dir() -> Path:
    return Path("/dev/shm") if os.path.isdir("/dev/shm") else Path(tempfile.gettempdir())


class SharedMemorySender:
    """One /dev/shm file per run, rewritten in place for every version through one long-lived
    mapping. Safe because the driver never publishes while a load is in flight."""

    def __init__(self, tag: str) -> None:
        self.path = _shm_dir() / f"dllm-weights-{tag}"
        self.buf: torch.Tensor | None = None  # kept mapped: re-mapping costs a page fault per 4 KiB

    def publish(self, state: dict[str, torch.Tensor], version: int) -> WeightsHandle:
        index, sizes = plan_buckets(state, bucket_bytes=1 << 62)  # one buffer: no broadcast granularity
        if self.buf is None or self.buf.numel() != max(sizes[0], 1):
            self.buf = torch.from_file(str(self.path), shared=True, size=max(sizes[0], 1), dtype=torch.uint8)
        pack(state, index, [self.buf])
        return WeightsHandle("shared_memory", version, index, sizes, shm_path=str(self.path))

    def close(self) -> None:
        self.buf = None
        self.path.unlink(missing_ok=True)


class SharedMemoryReceiver:
    def receive(self, handle: WeightsHandle) -> tuple[dict[str, torch.Tensor], int]:
        buf = torch.from_file(handle.shm_path, shared=False, size=max(handle.bucket_sizes[0], 1), dtype=torch.uint8)
        return unpack([buf], handle.index), handle.version


class ObjectStoreSender:
    def __init__(self, bucket_bytes: int) -> None:
        self.bucket_bytes = bucket_bytes

    def publish(self, state: dict[str, torch.Tensor], version: int) -> WeightsHandle:
        index, sizes = plan_buckets(state, self.bucket_bytes)
        buckets = [torch.empty(n, dtype=torch.uint8) for n in sizes]
        pack(state, index, buckets)
        ref = ray.put([b.numpy() for b in buckets])  # numpy: stored out-of-band, read back zero-copy
        return WeightsHandle("object_store", version, index, sizes, refs=[ref])


class ObjectStoreReceiver:
    def receive(self, handle: WeightsHandle) -> tuple[dict[str, torch.Tensor], int]:
        arrays = ray.get(handle.refs[0])
        with warnings.catch_warnings():  # read-only object-store memory; we only read from it
            warnings.simplefilter("ignore", UserWarning)
            buckets = [torch.from_numpy(np.asarray(a)) for a in arrays]
        return unpack(buckets, handle.index), handle.version


class CollectiveGroup:
    """A gloo group of its own (separate TCP store), so it never touches the learner's default group.
    Rank 0 is the learner; ranks 1.. are rollout workers. Every member must construct it concurrently."""

    def __init__(self, master_addr: str, port: int, rank: int, world_size: int, timeout_s: float = 300.0) -> None:
        timeout = datetime.timedelta(seconds=timeout_s)
        self.store = dist.TCPStore(master_addr, port, world_size, rank == 0, timeout=timeout)
        self.group = dist.ProcessGroupGloo(dist.PrefixStore("weight_sync", self.store), rank, world_size, timeout)
        self.rank, self.world_size = rank, world_size

    def broadcast(self, buckets: list[torch.Tensor]) -> None:
        for b in buckets:  # one collective per bucket, never one per parameter
            self.group.broadcast(b, 0).wait()


def reuse_buckets(cached: list[torch.Tensor], sizes: list[int]) -> list[torch.Tensor]:
    """The previous version's buckets when the layout is unchanged (fresh ones page-fault)."""
    if [b.numel() for b in cached] == sizes:
        return cached
    return [torch.empty(n, dtype=torch.uint8) for n in sizes]


class CollectiveSender:
    def __init__(self, group: CollectiveGroup, bucket_bytes: int) -> None:
        self.group, self.bucket_bytes = group, bucket_bytes
        self.buckets: list[torch.Tensor] = []

    def plan(self, state: dict[str, torch.Tensor], version: int) -> WeightsHandle:
        """The handle receivers need to allocate buckets; sent before the broadcast starts."""
        index, sizes = plan_buckets(state, self.bucket_bytes)
        return WeightsHandle("collective", version, index, sizes)

    def send(self, state: dict[str, torch.Tensor], handle: WeightsHandle) -> None:
        self.buckets = reuse_buckets(self.buckets, handle.bucket_sizes)
        pack(state, handle.index, self.buckets)
        self.group.broadcast(self.buckets)


class CollectiveReceiver:
    def __init__(self, group: CollectiveGroup) -> None:
        self.group = group
        self.buckets: list[torch.Tensor] = []

    def receive(self, handle: WeightsHandle) -> tuple[dict[str, torch.Tensor], int]:
        """Views into buckets reused by the next receive: the caller copies them out first."""
        self.buckets = reuse_buckets(self.buckets, handle.bucket_sizes)
        self.group.broadcast(self.buckets)
        return unpack(self.buckets, handle.index), handle.version


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]
