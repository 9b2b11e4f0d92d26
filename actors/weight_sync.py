"""Learner rank 0 → rollout workers weight transfer (docs/design.md §8), behind one small contract.

Every transport moves the same thing: the full weights laid out in flat byte buckets plus a small
index (name, dtype, shape, bucket, offset). The sender packs the engine's streamed tensors (views
of the parameters, gathered one at a time under ZeRO-3) straight into its long-lived buckets —
no intermediate copy of the state dict — and publishes a `WeightsHandle` (picklable, tiny); each
receiver copies the handle's bytes once, straight into its model.

- shared_memory: one copy into a /dev/shm file; receivers on the same node keep it mapped
  read-only and copy out of the mapping.
- collective: a dedicated gloo group (own TCP store/port) between rank 0 and remote workers;
  one broadcast per bucket, the receiver loading each bucket while the next is in flight.
- object_store: one ray.put of the buckets; receivers ray.get them (zero-copy numpy views).
"""
from __future__ import annotations

import datetime
import mmap
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Protocol

import numpy as np
import ray
import torch
import torch.distributed as dist

Kind = Literal["shared_memory", "collective", "object_store"]
Layout = list[tuple[str, torch.dtype, tuple[int, ...]]]  # (name, dtype, full shape) per tensor


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


def plan_buckets(layout: Layout, bucket_bytes: int) -> tuple[list[TensorMeta], list[int]]:
    """Assign tensors to buckets of at most `bucket_bytes` (a larger tensor gets its own bucket)."""
    index, sizes, cur = [], [0], 0
    for name, dtype, shape in layout:
        n = torch.Size(shape).numel() * dtype.itemsize
        if sizes[cur] and sizes[cur] + n > bucket_bytes:
            sizes.append(0)
            cur += 1
        offset = sizes[cur] + (-sizes[cur]) % 8  # 8-byte aligned views for every dtype
        index.append(TensorMeta(name, dtype, tuple(shape), cur, offset, n))
        sizes[cur] = offset + n
    return index, sizes


def unpack(buckets: list[torch.Tensor], index: list[TensorMeta]) -> dict[str, torch.Tensor]:
    """Typed views into the buckets, one per tensor (no copy)."""
    return {m.name: buckets[m.bucket][m.offset:m.offset + m.nbytes].view(m.dtype).view(m.shape) for m in index}


def pack(tensors: Iterable[tuple[str, torch.Tensor]],
         targets: list[tuple[list[TensorMeta], list[torch.Tensor]]]) -> None:
    """Copy each streamed tensor into its slot of every (index, buckets) target as it arrives: a
    streamed tensor is valid only until the next one (a ZeRO-3 gather is released then)."""
    slots = [unpack(buckets, index) for index, buckets in targets]
    seen = 0
    for name, tensor in tensors:
        for views in slots:
            # Same address: the parameter already lives in the slot (Engine.share_parameters).
            if tensor.device.type != "cpu" or views[name].data_ptr() != tensor.data_ptr():
                views[name].copy_(tensor)  # one copy (device to host too), whatever the source's strides
        seen += 1
    if slots and seen != len(slots[0]):
        raise ValueError(f"weight stream gave {seen} tensors, its layout announced {len(slots[0])}")


def check_covers(own: dict[str, torch.Tensor], index: list[TensorMeta]) -> None:
    missing = sorted(set(own) - {m.name for m in index})
    if missing:
        raise KeyError(f"weight sync is missing tensors {missing[:5]}{'...' if len(missing) > 5 else ''}")


def load_into(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> None:
    """Copy received tensors into the model's own (its state_dict) in place, dtype cast if needed."""
    with torch.no_grad():
        for name, t in state.items():
            if name in own:
                own[name].copy_(t)


def reuse_buckets(cached: list[torch.Tensor], sizes: list[int]) -> list[torch.Tensor]:
    """The previous version's buckets when the layout is unchanged (fresh ones page-fault)."""
    if [b.numel() for b in cached] == sizes:
        return cached
    return [torch.empty(n, dtype=torch.uint8) for n in sizes]


class Sender(Protocol):
    def prepare(self, layout: Layout, version: int) -> tuple[WeightsHandle, list[torch.Tensor]]:
        """The handle (index filled in) and the buckets to pack into."""

    def finish(self, handle: WeightsHandle) -> WeightsHandle:
        """After packing: make the buckets reachable through the handle."""


class Receiver(Protocol):
    def load(self, handle: WeightsHandle, model: torch.nn.Module) -> None: ...


def publish(tensors: Iterable[tuple[str, torch.Tensor]], layout: Layout, senders: dict[str, Sender],
            version: int) -> dict[str, WeightsHandle]:
    """Stream the weights once into every sender's buckets; a handle per transport."""
    prepared = {kind: s.prepare(layout, version) for kind, s in senders.items()}
    # The rollout workers are idle until this returns: the copy may use every core of the node.
    threads = torch.get_num_threads()
    torch.set_num_threads(max(threads, len(os.sched_getaffinity(0))))
    try:
        pack(tensors, [(handle.index, buckets) for handle, buckets in prepared.values()])
    finally:
        torch.set_num_threads(threads)
    return {kind: senders[kind].finish(handle) for kind, (handle, _) in prepared.items()}


def _shm_dir() -> Path:
    return Path("/dev/shm") if os.path.isdir("/dev/shm") else Path(tempfile.gettempdir())


class SharedMemorySender:
    """One /dev/shm file per run, rewritten in place for every version through one long-lived
    mapping. Safe because the driver never publishes while a load is in flight."""

    def __init__(self, tag: str) -> None:
        self.path = _shm_dir() / f"dllm-weights-{tag}"
        self.buf: torch.Tensor | None = None  # kept mapped: re-mapping costs a page fault per 4 KiB

    def prepare(self, layout: Layout, version: int) -> tuple[WeightsHandle, list[torch.Tensor]]:
        index, sizes = plan_buckets(layout, bucket_bytes=1 << 62)  # one buffer: no broadcast granularity
        if self.buf is None or self.buf.numel() != max(sizes[0], 1):
            self.buf = torch.from_file(str(self.path), shared=True, size=max(sizes[0], 1), dtype=torch.uint8)
        return WeightsHandle("shared_memory", version, index, sizes, shm_path=str(self.path)), [self.buf]

    def finish(self, handle: WeightsHandle) -> WeightsHandle:
        return handle

    def close(self) -> None:
        self.buf = None
        self.path.unlink(missing_ok=True)


class SharedMemoryReceiver:
    """Maps the sender's file shared and read-only (no private copy of it) and keeps the mapping
    across versions: the sender rewrites the same pages, so later loads take no page faults."""

    def __init__(self) -> None:
        self.key: tuple[str, int, int] | None = None  # (path, inode, size) of the live mapping
        self.buf = torch.empty(0, dtype=torch.uint8)

    def _mapped(self, path: str, size: int) -> torch.Tensor:
        key = (path, os.stat(path).st_ino, size)  # a new inode: the sender re-created the file
        if key != self.key:
            with open(path, "rb") as f:
                view = mmap.mmap(f.fileno(), size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
            with warnings.catch_warnings():  # read-only mapping; we only read from it
                warnings.simplefilter("ignore", UserWarning)
                self.buf = torch.frombuffer(view, dtype=torch.uint8)  # holds `view` open
            self.key = key
        return self.buf

    def load(self, handle: WeightsHandle, model: torch.nn.Module) -> None:
        own = model.state_dict()
        check_covers(own, handle.index)
        buf = self._mapped(handle.shm_path, max(handle.bucket_sizes[0], 1))
        load_into(own, unpack([buf], handle.index))


class ObjectStoreSender:
    def __init__(self, bucket_bytes: int) -> None:
        self.bucket_bytes = bucket_bytes
        self.buckets: list[torch.Tensor] = []  # reused: ray.put copies them into the object store

    def prepare(self, layout: Layout, version: int) -> tuple[WeightsHandle, list[torch.Tensor]]:
        index, sizes = plan_buckets(layout, self.bucket_bytes)
        self.buckets = reuse_buckets(self.buckets, sizes)
        return WeightsHandle("object_store", version, index, sizes), self.buckets

    def finish(self, handle: WeightsHandle) -> WeightsHandle:
        handle.refs = [ray.put([b.numpy() for b in self.buckets])]  # numpy: stored out-of-band, read zero-copy
        return handle


class ObjectStoreReceiver:
    def load(self, handle: WeightsHandle, model: torch.nn.Module) -> None:
        own = model.state_dict()
        check_covers(own, handle.index)
        arrays = ray.get(handle.refs[0])
        with warnings.catch_warnings():  # read-only object-store memory; we only read from it
            warnings.simplefilter("ignore", UserWarning)
            buckets = [torch.from_numpy(np.asarray(a)) for a in arrays]
        load_into(own, unpack(buckets, handle.index))


class CollectiveGroup:
    """A gloo group of its own (separate TCP store), so it never touches the learner's default group.
    Rank 0 is the learner; ranks 1.. are rollout workers. Every member must construct it concurrently."""

    def __init__(self, master_addr: str, port: int, rank: int, world_size: int, timeout_s: float = 300.0) -> None:
        timeout = datetime.timedelta(seconds=timeout_s)
        self.store = dist.TCPStore(master_addr, port, world_size, rank == 0, timeout=timeout)
        self.group = dist.ProcessGroupGloo(dist.PrefixStore("weight_sync", self.store), rank, world_size, timeout)
        self.rank, self.world_size = rank, world_size

    def broadcast(self, buckets: list[torch.Tensor]) -> list[Any]:
        """Start one broadcast per bucket (never one per parameter); wait on the returned works."""
        return [self.group.broadcast(b, 0) for b in buckets]


class CollectiveSender:
    """Packs during publish (every ZeRO-3 rank is there for the gather); `send` broadcasts later."""

    def __init__(self, group: CollectiveGroup, bucket_bytes: int) -> None:
        self.group, self.bucket_bytes = group, bucket_bytes
        self.buckets: list[torch.Tensor] = []

    def prepare(self, layout: Layout, version: int) -> tuple[WeightsHandle, list[torch.Tensor]]:
        index, sizes = plan_buckets(layout, self.bucket_bytes)
        self.buckets = reuse_buckets(self.buckets, sizes)
        return WeightsHandle("collective", version, index, sizes), self.buckets

    def finish(self, handle: WeightsHandle) -> WeightsHandle:
        return handle  # receivers allocate buckets from the handle, then join `send`'s broadcasts

    def send(self) -> None:
        for work in self.group.broadcast(self.buckets):
            work.wait()


class CollectiveReceiver:
    def __init__(self, group: CollectiveGroup) -> None:
        self.group = group
        self.buckets: list[torch.Tensor] = []

    def load(self, handle: WeightsHandle, model: torch.nn.Module) -> None:
        self.buckets = reuse_buckets(self.buckets, handle.bucket_sizes)
        works = self.group.broadcast(self.buckets)  # joined first: a failing receiver must not stall rank 0
        own = model.state_dict()
        by_bucket: list[list[TensorMeta]] = [[] for _ in self.buckets]
        for m in handle.index:
            by_bucket[m.bucket].append(m)
        for work, metas in zip(works, by_bucket):
            work.wait()  # the later buckets keep arriving while this one is copied into the model
            load_into(own, unpack(self.buckets, metas))
        check_covers(own, handle.index)
