"""shared_memory: workers on learner rank 0's node read one /dev/shm file.

tmpfs allocates a file's pages as they are first written, so a file larger than the space left
does not fail when it is sized: the first write past the end kills the writer with SIGBUS and no
traceback (docker's default /dev/shm is 64 MB). The room is therefore checked before the file is
created or grown.
"""
from __future__ import annotations

import mmap
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import torch

from models.transformer import synced_state

from .buckets import Layout, TensorMeta, WeightsHandle, check_covers, load_into, plan_buckets, unpack
from .planner import COLLECTIVE, OBJECT_STORE

StatVfs = Callable[[str], os.statvfs_result]


def shm_dir() -> Path:
    return Path("/dev/shm") if os.path.isdir("/dev/shm") else Path(tempfile.gettempdir())


def shm_problem(path: Path, size: int, statvfs: StatVfs = os.statvfs) -> str | None:
    """Why a `size`-byte file at `path` does not fit its filesystem (None: it fits). The file's
    own pages count as room: rewriting it in place allocates nothing."""
    st = statvfs(str(path.parent))
    own = path.stat().st_blocks * 512 if path.exists() else 0
    room = st.f_bavail * st.f_frsize + own
    if size <= room:
        return None
    mib = 1 << 20
    return (f"weight sync's shared-memory buffer needs {size / mib:.0f} MiB in {path.parent} but "
            f"{room / mib:.0f} MiB are free there: give the node a bigger {path.parent} (docker run "
            f"--shm-size=..., a Kubernetes emptyDir with medium: Memory) or set "
            f"weight_sync.transport={COLLECTIVE} (or {OBJECT_STORE})")


def _one_buffer(layout: Layout) -> tuple[list[TensorMeta], int]:
    """The index and byte size of one buffer holding the whole layout (no broadcast granularity)."""
    index, sizes = plan_buckets(layout, bucket_bytes=1 << 62)
    return index, max(sizes[0], 1)


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

    def load(self, handle: SharedMemoryHandle, model: torch.nn.Module) -> None:
        own = synced_state(model)
        check_covers(own, handle.index)
        buf = self._mapped(handle.path, max(handle.bucket_sizes[0], 1))
        load_into(own, unpack([buf], handle.index))


@dataclass
class SharedMemoryHandle(WeightsHandle):
    receiver: ClassVar[type[SharedMemoryReceiver]] = SharedMemoryReceiver
    path: str = ""  # the /dev/shm file holding the one bucket


class SharedMemorySender:
    """One /dev/shm file per run, rewritten in place for every version through one long-lived
    mapping. Safe because the driver never publishes while a load is in flight."""

    def __init__(self, tag: str, statvfs: StatVfs = os.statvfs) -> None:
        self.path = shm_dir() / f"dllm-weights-{tag}"
        self.statvfs = statvfs
        self.buf: torch.Tensor | None = None  # kept mapped: re-mapping costs a page fault per 4 KiB

    def problem(self, layout: Layout) -> str | None:
        """Why a version in this (wire) layout would not fit the node's /dev/shm (None: it fits)."""
        return shm_problem(self.path, _one_buffer(layout)[1], self.statvfs)

    def prepare(self, layout: Layout, version: int) -> tuple[SharedMemoryHandle, list[torch.Tensor]]:
        index, size = _one_buffer(layout)
        if self.buf is None or self.buf.numel() != size:
            problem = shm_problem(self.path, size, self.statvfs)
            if problem:
                raise RuntimeError(problem)
            self.buf = torch.from_file(str(self.path), shared=True, size=size, dtype=torch.uint8)
        return SharedMemoryHandle(version, index, [size], path=str(self.path)), [self.buf]

    def finish(self, handle: SharedMemoryHandle) -> SharedMemoryHandle:
        return handle

    def release(self) -> None:
        pass  # host memory, kept mapped

    def close(self) -> None:
        self.buf = None
        self.path.unlink(missing_ok=True)
