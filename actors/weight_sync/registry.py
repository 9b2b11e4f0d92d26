"""Each transport's sender and receiver, built from what an actor knows (its device, the run's tag,
the bucket size), plus the placement facts an actor reports to the planner. Learner rank 0 makes a
sender per transport name it is asked to publish to; a rollout worker reads a handle with the
receiver the handle names (and a group transport's only once it joined the group)."""
from __future__ import annotations

import contextlib
import gc
from typing import Iterable

import ray
import torch

from learner.network import use_interface_for_gloo

from .buckets import Layout, Receiver, Sender, WeightsHandle, gpu_uuid, publish
from .collective import BroadcastGroup, GroupReceiver, GroupSender
from .cuda_ipc import CudaIpcReceiver, CudaIpcSender
from .object_store import ObjectStoreReceiver, ObjectStoreSender
from .planner import COLLECTIVE, CUDA_IPC, GROUP_TRANSPORTS, NCCL, OBJECT_STORE, SHARED_MEMORY, Placement
from .shared_memory import SharedMemoryReceiver, SharedMemorySender

CPU = torch.device("cpu")


def local_placement(device: torch.device, shm_problem: str | None = None) -> Placement:
    return Placement(ray.get_runtime_context().get_node_id(), gpu_uuid(device), shm_problem)


def group_device(kind: str, device: torch.device) -> torch.device:
    """Where a group transport's buckets live: host memory for gloo, the actor's GPU for NCCL."""
    if kind == COLLECTIVE:
        return CPU
    if kind == NCCL and device.type == "cuda":
        return device
    raise ValueError(f"{kind} is not a broadcast group a process on {device} can join (groups: {GROUP_TRANSPORTS}; "
                     f"{NCCL} needs a GPU)")


def join_group(kind: str, master_addr: str, port: int, rank: int, world_size: int,
               device: torch.device) -> BroadcastGroup:
    """This actor's membership of the `kind` broadcast group (every member joins concurrently)."""
    bucket_device = group_device(kind, device)
    if bucket_device.type == "cpu":  # else gloo takes the address the hostname resolves to (127.0.1.1 on many hosts)
        use_interface_for_gloo(ray.util.get_node_ip_address())
    return BroadcastGroup(master_addr, port, rank, world_size, bucket_device)


class Senders:
    """Learner rank 0's senders, one per transport, each made at its first use and kept: its buckets
    (and mappings) are reused by every later version (fresh ones would page-fault every sync)."""

    def __init__(self, tag: str, bucket_bytes: int, device: torch.device) -> None:
        self.tag, self.bucket_bytes, self.device = tag, bucket_bytes, device
        self.senders: dict[str, Sender] = {}

    def _get(self, kind: str) -> Sender:
        if kind not in self.senders:
            if kind == SHARED_MEMORY:
                self.senders[kind] = SharedMemorySender(self.tag)
            elif kind == OBJECT_STORE:
                self.senders[kind] = ObjectStoreSender(self.bucket_bytes)
            elif kind == CUDA_IPC:
                self.senders[kind] = CudaIpcSender(self.device, gpu_uuid(self.device))
            else:
                raise RuntimeError(f"learner rank 0 has not joined the {kind} group (collective.WeightGroup.form)")
        return self.senders[kind]

    def join(self, kind: str, master_addr: str, port: int, world_size: int) -> None:
        """Host a broadcast group as its rank 0 (its members join concurrently)."""
        self.senders[kind] = GroupSender(kind, join_group(kind, master_addr, port, 0, world_size, self.device),
                                         self.bucket_bytes)

    def shm_problem(self, layout: Layout) -> str | None:
        return SharedMemorySender(self.tag).problem(layout)

    def publish(self, tensors: Iterable[tuple[str, torch.Tensor]], layout: Layout, kinds: list[str],
                version: int) -> dict[str, WeightsHandle]:
        return publish(tensors, layout, {k: self._get(k) for k in kinds}, version)

    def release_device_buffers(self) -> None:
        """Drop every sender's GPU buckets (their receivers have loaded): the engine needs the GPU."""
        for sender in self.senders.values():
            sender.release()

    def send(self, kinds: list[str]) -> None:
        """The broadcasts of the group transports among `kinds` (their receivers are in `load`). One
        that fails (a member died) drops its group: closing its connections fails the broadcast of
        every member still waiting for bytes at once, not at the group's timeout (minutes)."""
        failed: dict[str, str] = {}
        for kind in kinds:
            if kind in GROUP_TRANSPORTS:
                try:
                    self.senders[kind].send()
                except RuntimeError as err:  # the name (and the traceback holding the group) ends with the block
                    failed[kind] = str(err)
        if failed:
            for kind in failed:
                del self.senders[kind]
            gc.collect()
            raise RuntimeError(f"weight broadcast failed: {failed}")

    def close(self) -> None:
        if SHARED_MEMORY in self.senders:
            self.senders[SHARED_MEMORY].close()


class Receivers:
    """A rollout worker's receivers, by the receiver class a handle names: the host and IPC ones
    from the start, a group's once the worker joined it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.receivers: dict[type, Receiver] = {SharedMemoryReceiver: SharedMemoryReceiver(),
                                                ObjectStoreReceiver: ObjectStoreReceiver(),
                                                CudaIpcReceiver: CudaIpcReceiver(device, gpu_uuid(device))}

    def join(self, kind: str, master_addr: str, port: int, rank: int, world_size: int) -> None:
        self.receivers[GroupReceiver] = GroupReceiver(join_group(kind, master_addr, port, rank, world_size,
                                                                 self.device))

    def load(self, handle: WeightsHandle, model: torch.nn.Module) -> None:
        if handle.receiver not in self.receivers:  # only a group's receiver needs joining first
            raise RuntimeError(f"this rollout worker has not joined the {handle.transport} group "
                               "(collective.WeightGroup.form)")
        if handle.receiver is not SharedMemoryReceiver:
            self.receivers[SharedMemoryReceiver].unbind(model)
        self.receivers[handle.receiver].load(handle, model)

    def reading(self, model: torch.nn.Module, version: int) -> contextlib.AbstractContextManager[None]:
        """Around a decode: a model whose parameters are views of a shared-memory slot holds that
        slot (it cannot be rewritten meanwhile) and checks it still holds `version`."""
        return self.receivers[SharedMemoryReceiver].reading(model, version)
