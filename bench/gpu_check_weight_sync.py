"""Weight sync's part of the GPU check: the device transports with real CUDA, no Ray.

- cast_exact: fp32 weights on the GPU packed into bf16 host buckets (the cast runs on the GPU
  before the copy) equal the CPU's own fp32 → bf16 cast, bit for bit.
- cuda_ipc: a fresh process on the same GPU opens a 1 GiB device buffer through its CUDA IPC
  handle and copies it (GB/s, best of 3); the copy, exported back, equals the original; then the
  transport itself: CudaIpcSender (fp32 model on the GPU) → CudaIpcReceiver (bf16 model in the
  child), bit-exact against the sender-side cast (load_gb_s: its first load, the open included).
- nccl: the same model through an NCCL broadcast group, GPU 0 → GPU 1 in two processes (GB/s,
  bit-exact); "skipped" with fewer than 2 GPUs.

`weight_sync_figures("cuda")` is what bench/gpu_check.py reports:

    python bench/gpu_check_weight_sync.py
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any

import torch
import torch.multiprocessing as mp
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from actors.weight_sync.buckets import gpu_uuid, pack, plan_buckets, publish, unpack, wire_layout  # noqa: E402
from actors.weight_sync.collective import BroadcastGroup, GroupReceiver, GroupSender  # noqa: E402
from actors.weight_sync.cuda_ipc import CudaIpcReceiver, CudaIpcSender, export_buckets, open_buckets  # noqa: E402
from actors.weight_sync.planner import CUDA_IPC, NCCL  # noqa: E402
from bench.common import emit  # noqa: E402
from bench.gpu_check_common import SectionSkipped, Setup  # noqa: E402
from learner.distributed import free_port  # noqa: E402

GIB = 1 << 30
WIDTH, LAYERS = 4096, 8  # 134M parameters: 537 MB in fp32, 268 MB on the wire in bf16


def model(dtype: torch.dtype, device: str, seed: int | None = None) -> nn.Module:
    if seed is not None:
        torch.manual_seed(seed)
    return nn.Sequential(*[nn.Linear(WIDTH, WIDTH) for _ in range(LAYERS)]).to(device=device, dtype=dtype)


def stream(m: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(k, v.detach()) for k, v in m.state_dict().items()]


def layout(m: nn.Module, dtype: torch.dtype) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    return wire_layout([(k, v.dtype, tuple(v.shape)) for k, v in m.state_dict().items()], dtype)


def expected(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().to(torch.bfloat16) for k, v in m.state_dict().items()}


def synced(seconds: float, nbytes: int) -> float:
    return round(nbytes / seconds / 1e9, 2)


def cast_exact(device: str) -> bool:
    src = model(torch.float32, device, seed=0)
    index, sizes = plan_buckets(layout(src, torch.bfloat16), 64 << 20)
    buckets = [torch.empty(n, dtype=torch.uint8) for n in sizes]
    pack(stream(src), [(index, buckets)])
    got, want = unpack(buckets, index), expected(src)
    return all(torch.equal(got[k], want[k]) for k in want)


def _ipc_child(exports: list[dict[str, Any]], handle: Any, conn: Any) -> None:
    device = torch.device("cuda", 0)
    opened = open_buckets(exports, device)[0]
    copy = torch.empty_like(opened)
    best = float("inf")
    for _ in range(3):
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        copy.copy_(opened)
        torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    conn.send((best, export_buckets([copy])))
    dst = model(torch.bfloat16, "cuda")
    start = time.perf_counter()
    CudaIpcReceiver(device, gpu_uuid(device)).load(handle, dst)
    conn.send((time.perf_counter() - start, {k: v.cpu() for k, v in dst.state_dict().items()}))
    conn.recv()  # alive until the parent has read `copy` and the state (torch passes CPU tensors by fd)


def cuda_ipc_figures() -> dict[str, Any]:
    device = torch.device("cuda", 0)
    src_buf = torch.randint(0, 256, (GIB,), dtype=torch.uint8, device=device)
    src = model(torch.float32, "cuda", seed=1)
    sender = CudaIpcSender(device, gpu_uuid(device))
    handle = publish(stream(src), layout(src, torch.bfloat16), {CUDA_IPC: sender}, 1)[CUDA_IPC]
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_ipc_child, args=(export_buckets([src_buf]), handle, child))
    proc.start()
    copy_s, back = parent.recv()
    same_bytes = torch.equal(open_buckets(back, device)[0], src_buf)  # the mapping closes here
    load_s, state = parent.recv()
    want = expected(src)
    parent.send("done")
    proc.join(timeout=60)
    return {"same_bytes": same_bytes, "copy_gb_s": synced(copy_s, GIB),
            "transport_exact": all(torch.equal(state[k], want[k]) for k in want),
            "load_gb_s": synced(load_s, sum(v.numel() * 2 for v in want.values())), "exitcode": proc.exitcode}


def _nccl_member(rank: int, port: int, conn: Any) -> None:
    """Rank 0 publishes and broadcasts twice; rank 1 loads twice (the first forms the communicator)
    and reports the second."""
    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    group = BroadcastGroup("127.0.0.1", port, rank, 2, device)
    if rank == 0:
        src = model(torch.float32, "cuda", seed=2)
        sender = GroupSender(NCCL, group, 256 << 20)
        conn.send((publish(stream(src), layout(src, torch.bfloat16), {NCCL: sender}, 1)[NCCL], expected(src)))
        for _ in range(2):
            sender.send()
        return
    handle = conn.recv()
    dst, receiver = model(torch.bfloat16, "cuda"), GroupReceiver(group)
    receiver.load(handle, dst)
    start = time.perf_counter()
    receiver.load(handle, dst)
    conn.send((time.perf_counter() - start, {k: v.cpu() for k, v in dst.state_dict().items()}))
    conn.recv()  # alive until the parent has read the state (torch passes CPU tensors by fd)


def nccl_figures() -> dict[str, Any]:
    if torch.cuda.device_count() < 2:
        return {"skipped": f"needs 2 GPUs, {torch.cuda.device_count()} visible"}
    ctx = mp.get_context("spawn")
    port = free_port()
    (p0, c0), (p1, c1) = ctx.Pipe(), ctx.Pipe()
    procs = [ctx.Process(target=_nccl_member, args=(r, port, c)) for r, c in ((0, c0), (1, c1))]
    for p in procs:
        p.start()
    handle, want = p0.recv()
    p1.send(handle)
    seconds, state = p1.recv()
    p1.send("done")
    for p in procs:
        p.join(timeout=60)
    return {"exact": all(torch.equal(state[k], want[k]) for k in want),
            "gb_s": synced(seconds, sum(v.numel() * 2 for v in want.values())),
            "exitcodes": [p.exitcode for p in procs]}


def weight_sync_figures(device: str) -> dict[str, Any]:
    return {"cast_exact": cast_exact(device), CUDA_IPC: cuda_ipc_figures(), NCCL: nccl_figures()}


def weight_sync_section(setup: Setup) -> dict[str, Any]:
    """The GPU check's weight_sync section (the CPU transports are tests/actors/test_weight_sync*.py's)."""
    if not setup.cuda:
        raise SectionSkipped("no CUDA: the device transports need a GPU")
    return weight_sync_figures(str(setup.device))


if __name__ == "__main__":
    emit(weight_sync_figures("cuda"))
