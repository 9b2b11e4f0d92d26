"""collective and nccl: a broadcast group of its own (separate TCP store and port) between learner
rank 0 (rank 0) and rollout workers (ranks 1..), never touching the learner's default group.

The backend follows where the buckets live: gloo over TCP for host buckets (`collective`), NCCL
for device buckets (`nccl`: learner GPU → worker GPU over NVLink/PCIe/the network, no host copy).
One broadcast per bucket; the receiver copies a bucket into its model while the next arrives.
`WeightGroup` is the group's life cycle as the driver runs it: formed before the first sync that
needs it, formed again after a member left.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, ClassVar

import ray
import torch
import torch.distributed as dist
from ray.actor import ActorHandle

from models.transformer import synced_state

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


class GroupReceiver:
    def __init__(self, group: BroadcastGroup) -> None:
        self.group = group
        self.buckets: list[torch.Tensor] = []

    def load(self, handle: GroupHandle, model: torch.nn.Module) -> None:
        self.buckets = reuse_buckets(self.buckets, handle.bucket_sizes, self.group.device)
        works = self.group.broadcast(self.buckets)  # joined first: a failing receiver must not stall rank 0
        own = synced_state(model)
        try:
            check_covers(own, handle.index)  # before the first bucket is copied: never a half-updated model
        except ValueError:
            for work in works:  # let the group's broadcasts finish, so rank 0 and the others are not left hanging
                work.wait()
            raise
        by_bucket: list[list[TensorMeta]] = [[] for _ in self.buckets]
        for m in handle.index:
            by_bucket[m.bucket].append(m)
        for work, metas in zip(works, by_bucket):
            work.wait()  # the later buckets keep arriving while this one is copied into the model
            load_into(own, unpack(self.buckets, metas))
        synchronize(self.group.device)  # the next version's broadcast must not overwrite a bucket being read
        if self.group.device.type == "cuda":  # the GPU's memory is the KV cache's until the next sync
            self.buckets = []


@dataclass
class GroupHandle(WeightsHandle):
    receiver: ClassVar[type[GroupReceiver]] = GroupReceiver
    transport: str = ""  # the group whose broadcasts carry the buckets (collective or nccl)


class GroupSender:
    """Packs during publish (every ZeRO-3 rank is there for the gather); `send` broadcasts later."""

    def __init__(self, kind: str, group: BroadcastGroup, bucket_bytes: int) -> None:
        self.kind, self.group, self.bucket_bytes = kind, group, bucket_bytes
        self.buckets: list[torch.Tensor] = []

    def prepare(self, layout: Layout, version: int) -> tuple[GroupHandle, list[torch.Tensor]]:
        index, sizes = plan_buckets(layout, self.bucket_bytes)
        self.buckets = reuse_buckets(self.buckets, sizes, self.group.device)
        return GroupHandle(version, index, sizes, transport=self.kind), self.buckets

    def finish(self, handle: GroupHandle) -> GroupHandle:
        return handle  # receivers allocate buckets from the handle, then join `send`'s broadcasts

    def send(self) -> None:
        for work in self.group.broadcast(self.buckets):
            work.wait()
        synchronize(self.group.device)  # NCCL's wait only orders streams: return when the bytes are out

    def release(self) -> None:
        if self.group.device.type == "cuda":  # NCCL buckets: the model's size on the learner's GPU
            self.buckets = []


class WeightGroup:
    """One broadcast group's life, driven from the driver: learner rank 0 hosts it as rank 0 and its
    rollout workers join as ranks 1.. (all at once: the group forms when every member has joined).
    A worker Ray restarted has lost its membership: it leaves, and the group re-forms without it
    before the next sync that needs it. A recreated learner group plans fresh groups."""

    def __init__(self, transport: str, members: list[int]) -> None:
        self.transport, self.members = transport, members
        self.formed = False

    def form(self, rank0: ActorHandle, workers: list[ActorHandle]) -> None:
        if self.formed:
            return
        addr, port = ray.get(rank0.address.remote())
        world = len(self.members) + 1
        ray.get([rank0.join_weight_group.remote(self.transport, port, world)] +
                [workers[i].join_weight_group.remote(self.transport, addr, port, r + 1, world)
                 for r, i in enumerate(self.members)])
        self.formed = True

    def leave(self, worker: int) -> None:
        self.members.remove(worker)
        self.formed = False

    def check_complete(self, workers: list[int]) -> None:
        if not set(self.members) <= set(workers):
            raise ValueError(f"a {self.transport} sync must include every {self.transport} worker "
                             "(a broadcast is all-or-none)")
