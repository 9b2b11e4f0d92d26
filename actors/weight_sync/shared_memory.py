"""shared_memory: workers on learner rank 0's node decode straight from /dev/shm (no copy of their own).

Two files ("slots") per run, version v in slot v % 2: a worker's CPU parameters are views of the
slot holding its version, so the next version goes to the other slot while the workers may still
decode (async.max_staleness=1 decodes during the update, and a version is published before the
rollout that uses it). Nothing may write a slot a worker decodes from, and `flock` makes that
impossible rather than merely avoided: a worker holds a shared lock on its slot for a whole
decode (`reading`) and checks the slot still holds its version; the sender takes the exclusive
lock without waiting before it writes, and a slot in use is an error naming the slot, not a wait.
Publishing a version its slot already holds writes nothing (a restarted or late worker's sync
while the others decode from it). Each slot starts with a 64-byte header: the version it holds,
-1 while it is written.

tmpfs allocates a file's pages as they are first written, so a file larger than the space left
does not fail when it is sized: the first write past the end kills the writer with SIGBUS and no
traceback (docker's default /dev/shm is 64 MB). The room is therefore checked before the files are
created or grown.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Iterator

import torch

from models.transformer import synced_state

from .buckets import Layout, TensorMeta, WeightsHandle, check_covers, load_into, plan_buckets, unpack
from .planner import COLLECTIVE, OBJECT_STORE

StatVfs = Callable[[str], os.statvfs_result]
HEADER = 64  # bytes before a slot's weights: the version it holds (int64), 8-byte aligned views after it
SLOTS = 2  # one version decoded from while the next is written


def shm_dir() -> Path:
    return Path("/dev/shm") if os.path.isdir("/dev/shm") else Path(tempfile.gettempdir())


def slot_paths(tag: str) -> list[Path]:
    """The run's slot files (`tag`: its Ray namespace)."""
    return [shm_dir() / f"dllm-weights-{tag}-{s}" for s in range(SLOTS)]


def remove_slots(tag: str) -> None:
    """Unlink the run's slot files where a sender died before closing them: tmpfs keeps a file's pages
    (host memory) until it is unlinked, whoever made it."""
    for path in slot_paths(tag):
        path.unlink(missing_ok=True)


def shm_problem(paths: list[Path], size: int, statvfs: StatVfs = os.statvfs) -> str | None:
    """Why `size`-byte files at `paths` (one filesystem) do not fit (None: they fit). The files'
    own pages count as room: rewriting them in place allocates nothing."""
    st = statvfs(str(paths[0].parent))
    own = sum(p.stat().st_blocks * 512 for p in paths if p.exists())
    room, need = st.f_bavail * st.f_frsize + own, size * len(paths)
    if need <= room:
        return None
    mib = 1 << 20
    return (f"weight sync's shared-memory slots need {need / mib:.0f} MiB in {paths[0].parent} but "
            f"{room / mib:.0f} MiB are free there: give the node a bigger {paths[0].parent} (docker run "
            f"--shm-size=..., a Kubernetes emptyDir with medium: Memory) or set "
            f"weight_sync.transport={COLLECTIVE} (or {OBJECT_STORE})")


def _slot_size(layout: Layout) -> tuple[list[TensorMeta], int]:
    """The index of one bucket holding the whole layout, and a slot's bytes (header included)."""
    index, sizes = plan_buckets(layout, bucket_bytes=1 << 62)
    return index, HEADER + sizes[0]


def _within(t: torch.Tensor, buf: torch.Tensor) -> bool:
    return buf.data_ptr() <= t.data_ptr() < buf.data_ptr() + buf.numel()


def _lock(fd: int, kind: int, what: str) -> None:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RuntimeError(what) from None


class SharedMemoryReceiver:
    """Maps each slot shared and read-only, once (the sender rewrites the same pages), and binds the
    model's CPU parameters to the views of the slot holding the handle's version; a model elsewhere
    (a GPU worker on the learner's node) copies them instead."""

    def __init__(self) -> None:
        self.maps: dict[str, tuple[tuple[int, int], int, torch.Tensor]] = {}  # path -> (inode, size), fd, bytes
        self.views: dict[str, tuple[str, dict[str, torch.Tensor]]] = {}  # path -> layout digest, views
        self.bound: tuple[str, str] | None = None  # (slot path, a parameter name) of the last binding

    def _mapped(self, path: str, size: int) -> tuple[int, torch.Tensor]:
        key = (os.stat(path).st_ino, size)  # a new inode: the sender re-created the file
        if path not in self.maps or self.maps[path][0] != key:
            if path in self.maps:
                os.close(self.maps[path][1])
            fd = os.open(path, os.O_RDONLY)
            view = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
            with warnings.catch_warnings():  # read-only mapping; a write would fault, nothing writes
                warnings.simplefilter("ignore", UserWarning)
                self.maps[path] = (key, fd, torch.frombuffer(view, dtype=torch.uint8))  # holds `view` open
            self.views.pop(path, None)
        return self.maps[path][1], self.maps[path][2]

    @contextlib.contextmanager
    def _holding(self, path: str, size: int, version: int) -> Iterator[torch.Tensor]:
        """The slot's weights, under its shared lock, after checking it holds `version`."""
        fd, buf = self._mapped(path, size)
        _lock(fd, fcntl.LOCK_SH, f"shared-memory slot {path} is being written while a rollout worker reads it")
        try:
            held = int(buf[:8].view(torch.int64)[0])
            if held != version:
                raise RuntimeError(f"shared-memory slot {path} holds version {held}, not {version}: the weights "
                                   "this rollout worker was synced to were overwritten before it decoded")
            yield buf[HEADER:]
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def load(self, handle: SharedMemoryHandle, model: torch.nn.Module) -> None:
        own = synced_state(model, keep_vars=True)
        check_covers(own, handle.index)
        with self._holding(handle.path, handle.bucket_sizes[0], handle.version) as weights:
            if self.views.get(handle.path, ("",))[0] != handle.layout:
                self.views[handle.path] = (handle.layout, unpack([weights], handle.index))
            views = self.views[handle.path][1]
            bound, copied = None, {}
            with torch.no_grad():
                for name, t in own.items():
                    view = views.get(name)
                    if view is None:
                        continue
                    if isinstance(t, torch.nn.Parameter) and t.device.type == "cpu" and t.dtype == view.dtype:
                        t.data = view  # decoded from in place: the slot is locked for every decode
                        bound = name
                    else:
                        copied[name] = view  # a buffer, or a model on a GPU
            load_into(own, copied)
        self.bound = (handle.path, bound) if bound else None

    @contextlib.contextmanager
    def reading(self, model: torch.nn.Module, version: int) -> Iterator[None]:
        """A decode with `model`: when its parameters are views of a slot, that slot's shared lock is
        held throughout (no version can be written there meanwhile) and it must hold `version`."""
        path = self._bound_path(model)
        if path is None:
            yield
            return
        with self._holding(path, self.maps[path][2].numel(), version):
            yield

    def unbind(self, model: torch.nn.Module) -> None:
        """Give parameters that are views of a slot their own memory again, before another transport
        copies into them (the mapping is read-only)."""
        if self._bound_path(model) is None:
            return
        with torch.no_grad():
            for p in model.parameters():
                if any(_within(p, buf) for _, _, buf in self.maps.values()):
                    p.data = p.data.clone()
        self.bound = None

    def _bound_path(self, model: torch.nn.Module) -> str | None:
        """The slot the model's parameters are views of (None: its own memory, e.g. loaded from disk)."""
        if self.bound is None:
            return None
        path, name = self.bound
        try:
            param = model.get_parameter(name)
        except AttributeError:
            return None
        (inode, _), _, buf = self.maps[path]
        if not _within(param, buf):
            return None
        try:  # a file unlinked (or re-created) since it was mapped is written by no sender any more
            return path if os.stat(path).st_ino == inode else None
        except FileNotFoundError:
            return None


@dataclass
class SharedMemoryHandle(WeightsHandle):
    receiver: ClassVar[type[SharedMemoryReceiver]] = SharedMemoryReceiver
    path: str = ""  # the slot file holding this version; bucket_sizes[0]: its size, header included
    layout: str = ""  # a digest of `index`: receivers keep their views while it is unchanged


class Slot:
    """One slot file as the sender holds it: its writable mapping, an fd for its lock, its version."""

    def __init__(self, path: Path, size: int) -> None:
        self.buf = torch.from_file(str(path), shared=True, size=size, dtype=torch.uint8)
        self.fd = os.open(path, os.O_RDONLY)
        self.version = -2  # unknown to this sender: written before its first use
        self.index: list[TensorMeta] = []
        self.layout = ""

    def header(self) -> torch.Tensor:
        return self.buf[:8].view(torch.int64)


class SharedMemorySender:
    """The run's two slot files, each rewritten in place through one long-lived mapping (re-mapping
    costs a page fault per 4 KiB)."""

    def __init__(self, tag: str, statvfs: StatVfs = os.statvfs) -> None:
        self.paths = slot_paths(tag)
        self.statvfs = statvfs
        self.slots: list[Slot | None] = [None] * SLOTS
        self.writing: Slot | None = None  # between prepare and finish

    def problem(self, layout: Layout) -> str | None:
        """Why a version in this (wire) layout would not fit the node's /dev/shm (None: it fits)."""
        return shm_problem(self.paths, _slot_size(layout)[1], self.statvfs)

    def prepare(self, layout: Layout, version: int) -> tuple[SharedMemoryHandle, list[torch.Tensor] | None]:
        """The handle, and the slot's weights to pack into (None: the slot holds this version already)."""
        index, size = _slot_size(layout)
        s = version % SLOTS
        slot = self.slots[s]
        if slot is None or slot.buf.numel() != size:
            problem = shm_problem(self.paths, size, self.statvfs)
            if problem:
                raise RuntimeError(problem)
            if slot is not None:
                os.close(slot.fd)
            slot = self.slots[s] = Slot(self.paths[s], size)
        if slot.index != index:
            slot.index, slot.layout, slot.version = index, hashlib.sha1(repr(index).encode()).hexdigest(), -2
        handle = SharedMemoryHandle(version, index, [size], path=str(self.paths[s]), layout=slot.layout)
        if slot.version == version:
            return handle, None
        _lock(slot.fd, fcntl.LOCK_EX, f"weight sync would overwrite shared-memory slot {self.paths[s]} (version "
                                      f"{slot.version}) with version {version} while a rollout worker decodes "
                                      "from it: a version may only be published when no decode uses the one two "
                                      "before it")
        slot.header()[0] = -1
        slot.version = -1  # no longer the old version: a pack that fails must not let it be "published" again
        self.writing = slot
        return handle, [slot.buf[HEADER:]]

    def finish(self, handle: SharedMemoryHandle) -> SharedMemoryHandle:
        slot, self.writing = self.writing, None
        if slot is not None:
            slot.header()[0] = handle.version
            slot.version = handle.version
            fcntl.flock(slot.fd, fcntl.LOCK_UN)
        return handle

    def release(self) -> None:
        pass  # host memory, kept mapped

    def close(self) -> None:
        for slot in self.slots:
            if slot is not None:
                os.close(slot.fd)
        self.slots = [None] * SLOTS
        for path in self.paths:
            path.unlink(missing_ok=True)
