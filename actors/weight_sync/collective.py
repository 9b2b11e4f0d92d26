"""collective and nccl: a broadcast group of its own (separate TCP store and port) between learner
rank 0 (rank 0) and rollout workers (ranks 1..), never touching the learner's default group.

The backend follows where the buckets live: gloo over TCP for host buckets (`collective`), NCCL
for device buckets (`nccl`: learner GPU → worker GPU over NVLink/PCIe/the network, no host copy).
One broadcast per bucket; the receiver copies a bucket into its model while the next arrives.
"""
from __future__ import annotations

import datetime
from typing import Any

import torch
import torch.distributed as dist

from .buckets import (
    Layout,
    TensorMeta,
    WeightsHandle,
    check_covers,
    concrete,
    load_into,
    plan_buckets,
    reuse_buckets,
    synchronize,
    unpack,
)


class BroadcastGroup:
    """Every member must construct it concurrently (the store and the group form when all joined).
    A gloo group binds to GLOO_SOCKET_IFNAME's interface (learner.network.use_interface_for_gloo)."""

    def __init__(self, master_addr: str, port: int, rank: int, world_size: int, device: torch.device,
                 timeout_s: float = 300.0) -> None:
        timeout = datetime.timedelta(seconds=timeout_s)
        self.store = dist.TCPStore(master_addr, port, world_size, rank == 0, timeout=timeout)
        store = dist.PrefixStore("weight_sync", self.store)
        if device.type == "cuda":
            options = dist.ProcessGroupNCCL.Options()
            options._timeout = timeout
            self.group: Any = dist.ProcessGroupNCCL(store, rank, world_size, options)
        else:
            self.group = dist.ProcessGroupGloo(store, rank, world_size, timeout)
        self.device, self.rank, self.world_size = concrete(device), rank, world_size

    def broadcast(self, buckets: list[torch.Tensor]) -> list[Any]:
        """Start one broadcast per bucket (never one per parameter); wait on the returned works."""
        return [self.group.broadcast(b, 0) for b in buckets]


class GroupSender:
    """Packs during publish (every ZeRO-3 rank is there for the gather); `send` broadcasts later."""

    def __init__(self, kind: str, group: BroadcastGroup, bucket_bytes: int) -> None:
        self.kind, self.group, self.bucket_bytes = kind, group, bucket_bytes
        self.buckets: list[torch.Tensor] = []

    def prepare(self, layout: Layout, version: int) -> tuple[WeightsHandle, list[torch.Tensor]]:
        index, sizes = plan_buckets(layout, self.bucket_bytes)
        self.buckets = reuse_buckets(self.buckets, sizes, self.group.device)
        return WeightsHandle(self.kind, version, index, sizes), self.buckets

    def finish(self, handle: WeightsHandle) -> WeightsHandle:
        return handle  # receivers allocate buckets from the handle, then join `send`'s broadcasts

    def send(self) -> None:
        for work in self.group.broadcast(self.buckets):
            work.wait()
        synchronize(self.group.device)  # NCCL's wait only orders streams: return when the bytes are out

    def release(self) -> None:
        if self.group.device.type == "cuda":  # NCCL buckets: the model's size on the learner's GPU
            self.buckets = []


class GroupReceiver:
    def __init__(self, group: BroadcastGroup) -> None:
        self.group = group
        self.buckets: list[torch.Tensor] = []

    def load(self, handle: WeightsHandle, model: torch.nn.Module) -> None:
        self.buckets = reuse_buckets(self.buckets, handle.bucket_sizes, self.group.device)
        works = self.group.broadcast(self.buckets)  # joined first: a failing receiver must not stall rank 0
        own = model.state_dict()
        by_bucket: list[list[TensorMeta]] = [[] for _ in self.buckets]
        for m in handle.index:
            by_bucket[m.bucket].append(m)
        for work, metas in zip(works, by_bucket):
            work.wait()  # the later buckets keep arriving while this one is copied into the model
            load_into(own, unpack(self.buckets, metas))
        synchronize(self.group.device)  # the next version's broadcast must not overwrite a bucket being read
        check_covers(own, handle.index)
        if self.group.device.type == "cuda":  # the GPU's memory is the KV cache's until the next sync
            self.buckets = []
