"""object_store: one ray.put of the buckets; receivers ray.get them (zero-copy numpy views).
Works anywhere Ray does: the fallback for a restarted member of a broadcast group."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import ray
import torch

from models.transformer import synced_state

from .buckets import Layout, WeightsHandle, check_covers, load_into, plan_buckets, reuse_buckets, unpack

CPU = torch.device("cpu")


class ObjectStoreReceiver:
    def load(self, handle: ObjectStoreHandle, model: torch.nn.Module) -> None:
        own = synced_state(model)
        check_covers(own, handle.index)
        arrays = ray.get(handle.refs[0])
        with warnings.catch_warnings():  # read-only object-store memory; we only read from it
            warnings.simplefilter("ignore", UserWarning)
            buckets = [torch.from_numpy(np.asarray(a)) for a in arrays]
        load_into(own, unpack(buckets, handle.index))


@dataclass
class ObjectStoreHandle(WeightsHandle):
    receiver: ClassVar[type[ObjectStoreReceiver]] = ObjectStoreReceiver
    by_reference: ClassVar[bool] = True
    refs: list[Any] = field(default_factory=list)  # [the ObjectRef of the bucket list]


class ObjectStoreSender:
    def __init__(self, bucket_bytes: int) -> None:
        self.bucket_bytes = bucket_bytes
        self.buckets: list[torch.Tensor] = []  # reused: ray.put copies them into the object store

    def prepare(self, layout: Layout, version: int) -> tuple[ObjectStoreHandle, list[torch.Tensor]]:
        index, sizes = plan_buckets(layout, self.bucket_bytes)
        self.buckets = reuse_buckets(self.buckets, sizes, CPU)
        return ObjectStoreHandle(version, index, sizes), self.buckets

    def finish(self, handle: ObjectStoreHandle) -> ObjectStoreHandle:
        handle.refs = [ray.put([b.numpy() for b in self.buckets])]  # numpy: stored out-of-band, read zero-copy
        return handle

    def release(self) -> None:
        pass  # host buckets, reused
