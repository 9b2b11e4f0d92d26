"""The contract every transport shares: the weights as flat byte buckets plus an index.

The sender packs the engine's streamed tensors (views of the parameters, gathered one at a time
under ZeRO-3) straight into its long-lived buckets — no intermediate copy of the state dict — cast
to the receivers' dtype where the tensor lives (the learner's GPU when it has one), so the bytes
moved and held are the rollout dtype's. It publishes a `WeightsHandle` (picklable, tiny); each
receiver copies the handle's bytes once, straight into its model (or, shared memory, decodes from them).
"""
from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from typing import ClassVar, Iterable, Protocol

import torch

Layout = list[tuple[str, torch.dtype, tuple[int, ...]]]  # (name, dtype, full shape) per tensor


@dataclass(frozen=True)
class TensorMeta:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    bucket: int
    offset: int  # bytes into the bucket
    nbytes: int


class Receiver(Protocol):
    def load(self, handle: WeightsHandle, model: torch.nn.Module) -> None: ...


@dataclass
class WeightsHandle:
    """What crosses from learner rank 0 to the driver to each rollout worker (never the tensors).
    Each transport's subclass adds where its bytes are and names the receiver that reads them."""
    receiver: ClassVar[type[Receiver]]
    by_reference: ClassVar[bool] = False  # it holds object refs, which only Ray may pickle: not Sealed
    version: int
    index: list[TensorMeta]
    bucket_sizes: list[int]


@dataclass(frozen=True)
class Sealed:
    """A handle the driver pickled once for all the workers: each worker's call carries the bytes
    (copied into the call) instead of the handle pickled again per call (its index has an entry
    per tensor: ~0.8 ms each at 288 tensors) or an object-store reference every worker fetches.
    `digest` names the handle without unpickling it: a worker that loaded it skips it."""
    blob: bytes
    digest: str

    @classmethod
    def of(cls, handle: WeightsHandle) -> Sealed:
        blob = pickle.dumps(handle)
        return cls(blob, hashlib.sha1(blob).hexdigest())

    def open(self) -> WeightsHandle:
        return pickle.loads(self.blob)


def wire_layout(layout: Layout, dtype: torch.dtype) -> Layout:
    """What the receivers hold: floating tensors in their model's dtype, the others as they are."""
    return [(name, dtype if t.is_floating_point else t, shape) for name, t, shape in layout]


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
        wire: torch.Tensor | None = None  # the tensor cast to the slots' dtype on its own device
        for views in slots:
            view = views[name]
            if view.device == tensor.device:
                view.copy_(tensor)  # casts in the same pass, whatever the source's strides
                continue
            if wire is None:  # cast before crossing devices: the wire dtype's bytes move, once
                wire = tensor.to(view.dtype)
            view.copy_(wire)
        seen += 1
    if slots and seen != len(slots[0]):
        raise ValueError(f"weight stream gave {seen} tensors, its layout announced {len(slots[0])}")


def check_covers(own: dict[str, torch.Tensor], index: list[TensorMeta]) -> None:
    """Before anything is written: the index holds exactly the receiver's tensors, each in its shape,
    in a dtype the receiver's holds exactly. `copy_` would broadcast a smaller shape, stop halfway
    through the model at a larger one, and round a wider dtype; a tensor the receiver lacks (a
    sender with more layers) would be dropped without a word."""
    names = {m.name for m in index}
    missing, extra = sorted(set(own) - names), sorted(names - set(own))
    for what, which in (("is missing tensors", missing), ("carries tensors this model lacks", extra)):
        if which:
            raise ValueError(f"weight sync {what} {which[:5]}{'...' if len(which) > 5 else ''}: the rollout "
                             "model's config differs from the learner's")
    for m in index:
        t = own[m.name]
        if tuple(t.shape) != m.shape:
            raise ValueError(f"weight sync: {m.name} is {list(m.shape)} from the learner but {list(t.shape)} in "
                             "the rollout model: their configs differ")
        if torch.promote_types(m.dtype, t.dtype) != t.dtype:  # bf16 into fp32 is exact, the reverse rounds
            raise ValueError(f"weight sync: {m.name} arrives as {m.dtype}, which the rollout model's {t.dtype} "
                             "cannot hold exactly (the wire carries the rollout dtype: model.dtype)")


def load_into(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> None:
    """Copy received tensors into the model's own (its state_dict) in place."""
    with torch.no_grad():
        for name, t in state.items():
            if name in own:
                own[name].copy_(t)


def reuse_buckets(cached: list[torch.Tensor], sizes: list[int], device: torch.device) -> list[torch.Tensor]:
    """The previous version's buckets when the layout is unchanged (fresh ones page-fault)."""
    if [b.numel() for b in cached] == sizes and all(b.device == device for b in cached):
        return cached
    return [torch.empty(n, dtype=torch.uint8, device=device) for n in sizes]


def concrete(device: torch.device) -> torch.device:
    """`device` with its index (tensors report cuda:0, never cuda), so devices compare equal."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def gpu_uuid(device: torch.device) -> str | None:
    """The UUID of `device`'s GPU (one name across processes whatever CUDA_VISIBLE_DEVICES says)."""
    return str(torch.cuda.get_device_properties(concrete(device)).uuid) if device.type == "cuda" else None


def synchronize(device: torch.device) -> None:
    """Wait for this process's queued copies on `device` (a no-op on CPU, where copies are done)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Sender(Protocol):
    def prepare(self, layout: Layout, version: int) -> tuple[WeightsHandle, list[torch.Tensor] | None]:
        """The handle (index filled in) and the buckets to pack into (None: they hold `version` already)."""

    def finish(self, handle: WeightsHandle) -> WeightsHandle:
        """After packing: make the buckets reachable through the handle."""

    def release(self) -> None:
        """Between syncs: drop buckets that live on a GPU (the engine, or a colocated rollout worker,
        needs that memory); host buckets stay for the next version."""


def publish(tensors: Iterable[tuple[str, torch.Tensor]], layout: Layout, senders: dict[str, Sender],
            version: int) -> dict[str, WeightsHandle]:
    """Stream the weights once into every sender's buckets; a handle per transport. `layout` is the
    wire layout (wire_layout): each tensor is cast to its dtype as it is packed."""
    prepared = {kind: s.prepare(layout, version) for kind, s in senders.items()}
    # The rollout workers are idle until this returns: the copy may use every core of the node.
    threads = torch.get_num_threads()
    torch.set_num_threads(max(threads, len(os.sched_getaffinity(0))))
    try:
        pack(tensors, [(handle.index, buckets) for handle, buckets in prepared.values() if buckets is not None])
    finally:
        torch.set_num_threads(threads)
    return {kind: senders[kind].finish(handle) for kind, (handle, _) in prepared.items()}
