"""The weight-sync contract without Ray: the sender casts to the receivers' dtype as it packs (the
buffers hold the rollout dtype's bytes), /dev/shm is measured before the buffer is created or
grown, and the CUDA IPC transport's handle plumbing (the CUDA calls faked on CPU)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from actors.weight_sync.buckets import publish, wire_layout
from actors.weight_sync.collective import GroupHandle
from actors.weight_sync.cuda_ipc import DEVICE_PARAM, REBUILD_PARAMS, CudaIpcReceiver, CudaIpcSender
from actors.weight_sync.planner import COLLECTIVE, CUDA_IPC, NCCL, SHARED_MEMORY
from actors.weight_sync.registry import Receivers, group_device
from actors.weight_sync.shared_memory import HEADER, SharedMemoryReceiver, SharedMemorySender, shm_problem

MIB = 1 << 20


class Net(nn.Module):
    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 3), nn.LayerNorm(3)).to(dtype)  # odd sizes: alignment
        self.register_buffer("steps", torch.arange(3))  # int64: not the floating dtype's business


def _stream(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(name, t.detach()) for name, t in model.state_dict().items()]


def _layout(model: nn.Module) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    return [(name, t.dtype, tuple(t.shape)) for name, t in model.state_dict().items()]


def _fp32_source() -> Net:
    src = Net(torch.float32)
    with torch.no_grad():
        for p in src.parameters():
            p.normal_()  # values bf16 cannot hold: a missing cast would show
        src.steps.copy_(torch.tensor([7, -1, 1 << 40]))
    return src


def _statvfs(free_bytes: int):
    """A statvfs reader for a filesystem with `free_bytes` free, in 4 KiB blocks."""
    blocks = free_bytes // 4096
    return lambda path: os.statvfs_result((4096, 4096, blocks, blocks, blocks, 0, 0, 0, 0, 255))


def test_sender_casts_to_the_receivers_dtype_and_the_buffer_holds_its_bytes(tmp_path):
    src, dst = _fp32_source(), Net(torch.bfloat16)
    sender = SharedMemorySender(f"test-wire-{tmp_path.name}")
    try:
        handle = publish(_stream(src), wire_layout(_layout(src), torch.bfloat16), {SHARED_MEMORY: sender}, 1)[
            SHARED_MEMORY]
        SharedMemoryReceiver().load(handle, dst)
        assert {m.name: m.dtype for m in handle.index} == {name: t.dtype for name, t in dst.state_dict().items()}
        floats = sum(p.numel() for p in src.parameters())
        assert sum(m.nbytes for m in handle.index) == 2 * floats + 8 * 3  # bf16 weights, int64 steps
        assert os.path.getsize(handle.path) == handle.bucket_sizes[0] < HEADER + 4 * floats  # the bf16 size
        expected = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in src.state_dict().items()}
        got = dst.state_dict()
        assert all(torch.equal(got[k], v) and got[k].dtype == v.dtype for k, v in expected.items())
    finally:
        sender.close()


def test_a_buffer_larger_than_dev_shm_is_refused_before_the_file_exists(tmp_path):
    layout = [("w", torch.bfloat16, (50 * MIB,))]  # 100 MiB in bf16, in each of the two slots
    sender = SharedMemorySender(f"test-full-{tmp_path.name}", statvfs=_statvfs(128 * MIB))
    assert "200 MiB" in sender.problem(layout) and "128 MiB are free" in sender.problem(layout)
    with pytest.raises(RuntimeError) as err:
        sender.prepare(layout, 1)
    for part in ("need 200 MiB", "128 MiB are free", "--shm-size", "weight_sync.transport=collective"):
        assert part in str(err.value)
    assert not any(p.exists() for p in sender.paths)  # nothing was written that SIGBUS could hit
    assert sender.problem([("w", torch.bfloat16, (30 * MIB,))]) is None  # 2 x 60 MiB fit


def test_the_buffers_own_pages_count_as_room_when_it_is_rewritten(tmp_path):
    path = Path("/dev/shm" if os.path.isdir("/dev/shm") else tmp_path) / f"dllm-test-own-{tmp_path.name}"
    try:
        path.write_bytes(b"\1" * 4 * MIB)  # pages really allocated: st_blocks counts them
        assert shm_problem([path], 5 * MIB, _statvfs(2 * MIB)) is None  # 4 MiB its own + 2 MiB free
        assert "need 7 MiB" in shm_problem([path], 7 * MIB, _statvfs(2 * MIB))
    finally:
        path.unlink(missing_ok=True)


def test_cuda_ipc_round_trip_with_the_cuda_calls_faked():
    """The sender stamps its GPU and exports after packing; the receiver checks the GPU, opens the
    exports on its own device and loads every tensor in the wire dtype. Between syncs neither side
    holds the buffer (the GPU is the update's or the KV cache's): each version exports a fresh one."""
    exported: dict[int, torch.Tensor] = {}  # what a CUDA IPC handle would name

    def export(buckets):
        exported.update({id(b): b for b in buckets})
        return [{"storage_handle": id(b), "storage_size_bytes": b.numel()} for b in buckets]

    opened: list[torch.device] = []

    def open_(exports, device):
        opened.append(device)
        return [exported[e["storage_handle"]].clone() for e in exports]  # another process's view of it

    src, dst = _fp32_source(), Net(torch.bfloat16)
    sender = CudaIpcSender(torch.device("cpu"), "GPU-0", export=export)
    receiver = CudaIpcReceiver(torch.device("cpu"), "GPU-0", open_=open_)
    for version in (1, 2):
        with torch.no_grad():
            src.body[0].weight.add_(1.0)
        handle = publish(_stream(src), wire_layout(_layout(src), torch.bfloat16), {CUDA_IPC: sender}, version)[CUDA_IPC]
        assert handle.gpu == "GPU-0" and len(handle.exports) == 1 and len(exported) == version
        receiver.load(handle, dst)
        expected = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in src.state_dict().items()}
        assert all(torch.equal(dst.state_dict()[k], v) for k, v in expected.items())
        assert not hasattr(receiver, "buckets")  # no mapping kept past the load
        sender.release()  # what the learner does before its next use of the GPU
        assert sender.buckets == []
    assert opened == [torch.device("cpu")] * 2
    with pytest.raises(RuntimeError, match="live on GPU GPU-0 but this worker runs on GPU GPU-1"):
        CudaIpcReceiver(torch.device("cpu"), "GPU-1", open_=open_).load(handle, dst)


def test_cuda_ipc_rewrites_the_device_argument_torch_rebuilds_with():
    """open_buckets swaps in the receiver's GPU index by name: it must still be torch's name."""
    assert DEVICE_PARAM in REBUILD_PARAMS and "storage_handle" in REBUILD_PARAMS


def test_group_buckets_live_on_the_host_for_gloo_and_nccl_needs_a_gpu():
    assert group_device(COLLECTIVE, torch.device("cuda", 3)) == torch.device("cpu")
    with pytest.raises(ValueError, match="nccl needs a GPU"):
        group_device(NCCL, torch.device("cpu"))


def test_a_worker_outside_a_group_says_so_instead_of_a_key_error():
    with pytest.raises(RuntimeError, match="has not joined the nccl group"):
        Receivers(torch.device("cpu")).load(GroupHandle(1, [], [1], transport=NCCL), Net(torch.float32))
