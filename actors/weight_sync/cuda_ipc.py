"""cuda_ipc: a rollout worker on learner rank 0's GPU (cluster.colocate) reads rank 0's device
buffer in place through CUDA IPC and copies it into its model: one device-to-device copy, no host
copy, no communicator (NCCL refuses two ranks on one GPU).

The buffer lives only for a sync: the receiver drops its mapping after copying and the sender its
buffer before the learner's next use of the GPU (`release`), since between syncs the GPU's memory
is the rollout worker's KV cache or the learner's update (the weights' size in the rollout dtype:
~8 GB for a 4B model). Opening a fresh handle per sync costs milliseconds.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch.multiprocessing.reductions import rebuild_cuda_tensor, reduce_tensor

from models.transformer import synced_state

from .buckets import (
    Layout,
    WeightsHandle,
    check_covers,
    concrete,
    load_into,
    plan_buckets,
    reuse_buckets,
    synchronize,
    unpack,
)
from .planner import CUDA_IPC

Export = dict[str, Any]  # rebuild_cuda_tensor's keyword arguments for one buffer: bytes, ints, classes
REBUILD_PARAMS = tuple(inspect.signature(rebuild_cuda_tensor).parameters)
DEVICE_PARAM = "storage_device"  # the one argument that differs per process: the GPU's local index


def export_buckets(buckets: list[torch.Tensor]) -> list[Export]:
    """What another process on the same GPU needs to open each bucket (picklable)."""
    exports = []
    for bucket in buckets:
        _, args = reduce_tensor(bucket)
        exports.append(dict(zip(REBUILD_PARAMS, args)))
    return exports


def open_buckets(exports: list[Export], device: torch.device) -> list[torch.Tensor]:
    """The exported buckets as tensors of this process on `device` (the exporter's GPU, whatever
    index this process's CUDA_VISIBLE_DEVICES gives it)."""
    return [rebuild_cuda_tensor(**{**e, DEVICE_PARAM: concrete(device).index}) for e in exports]


class CudaIpcReceiver:
    def __init__(self, device: torch.device, gpu: str | None,
                 open_: Callable[[list[Export], torch.device], list[torch.Tensor]] = open_buckets) -> None:
        self.device, self.gpu, self.open = concrete(device), gpu, open_

    def load(self, handle: CudaIpcHandle, model: torch.nn.Module) -> None:
        if self.gpu is None or handle.gpu != self.gpu:
            raise RuntimeError(f"{CUDA_IPC} weights live on GPU {handle.gpu} but this worker runs on GPU "
                               f"{self.gpu}: only a worker on learner rank 0's GPU can use {CUDA_IPC}")
        own = synced_state(model)
        check_covers(own, handle.index)
        buckets = self.open(handle.exports, self.device)
        load_into(own, unpack(buckets, handle.index))
        synchronize(self.device)  # the copies read the learner's memory: done before it lets it go


@dataclass
class CudaIpcHandle(WeightsHandle):
    receiver: ClassVar[type[CudaIpcReceiver]] = CudaIpcReceiver
    exports: list[Export] = field(default_factory=list)  # per bucket, its CUDA IPC export
    gpu: str | None = None  # UUID of the GPU the buckets live on


class CudaIpcSender:
    """`gpu`: the UUID of `device`'s GPU (gpu_uuid), stamped on the handle for the receiver to check."""

    def __init__(self, device: torch.device, gpu: str,
                 export: Callable[[list[torch.Tensor]], list[Export]] = export_buckets) -> None:
        self.device, self.gpu, self.export = concrete(device), gpu, export
        self.buckets: list[torch.Tensor] = []

    def prepare(self, layout: Layout, version: int) -> tuple[CudaIpcHandle, list[torch.Tensor]]:
        index, sizes = plan_buckets(layout, bucket_bytes=1 << 62)  # one buffer: one handle to open
        self.buckets = reuse_buckets(self.buckets, sizes, self.device)
        return CudaIpcHandle(version, index, sizes, gpu=self.gpu), self.buckets

    def finish(self, handle: CudaIpcHandle) -> CudaIpcHandle:
        synchronize(self.device)  # the packing kernels are done before another process reads
        handle.exports = self.export(self.buckets)
        return handle

    def release(self) -> None:
        self.buckets = []
        if torch.cuda.is_initialized():
            torch.cuda.ipc_collect()  # blocks the receiver has let go of go back to the allocator
