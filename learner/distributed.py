"""torch.distributed set-up and the few collectives the engine needs.

One process per data-parallel rank; the caller (a learner actor, a test) says who it is. The
backend follows the device: nccl with CUDA, gloo on CPU.
"""
from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist


def init_distributed(rank: int, world_size: int, master_addr: str, master_port: int,
                     backend: str | None = None) -> None:
    """Join the default process group (no-op if this process already has one).

    Also exports RANK/WORLD_SIZE/MASTER_* and LOCAL_RANK (kept if set, else 0: a learner actor sees
    only its own GPU) because DeepSpeed reads them from the environment.
    """
    if dist.is_initialized():
        return
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR=master_addr,
                      MASTER_PORT=str(master_port))
    os.environ.setdefault("LOCAL_RANK", "0")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend, init_method=f"tcp://{master_addr}:{master_port}", rank=rank,
                            world_size=world_size)


def free_ports(n: int) -> list[int]:
    """n distinct TCP ports that were free a moment ago on every interface (other nodes may connect
    to them). All n sockets are held open together, so the kernel cannot hand out one port twice."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def is_initialized() -> bool:
    return dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def count_range(n: int, device: torch.device) -> tuple[int, int]:
    """(min, max) of `n` over all ranks in one collective."""
    if world_size() == 1:
        return n, n
    t = torch.tensor([n, -n], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return -int(t[1]), int(t[0])


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Mean of each value over all ranks; every rank must pass the same keys."""
    if world_size() == 1:
        return dict(values)
    names = sorted(values)
    t = torch.tensor([values[k] for k in names], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(names, (t / world_size()).tolist()))
