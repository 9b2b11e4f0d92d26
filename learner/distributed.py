"""torch.distributed set-up and the few collectives the engine needs.

One process per data-parallel rank; the caller (a learner actor, a test) says who it is and which
device it owns. On a GPU the default group is `cpu:gloo,cuda:nccl`: model tensors go through NCCL,
and the host-side figures every rank exchanges (micro-batch counts, token totals, metrics) go
through gloo. Those host collectives never rely on the default group serving CPU tensors: when it
does not (a plain `nccl` group, or the `cuda:gloo` stand-in the tests use for it), a gloo group of
its own carries them (`host_group`).
"""
from __future__ import annotations

import os
import socket
from typing import Literal

import torch
import torch.distributed as dist

_host: dist.ProcessGroup | None = None  # CPU-tensor group when the default one serves only CUDA


def default_backend(device: torch.device) -> str:
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def init_distributed(rank: int, world_size: int, master_addr: str, master_port: int,
                     device: torch.device, backend: str | None = None) -> None:
    """Join the default process group (no-op if this process already has one) for `device`.

    Also exports RANK/WORLD_SIZE/MASTER_* and LOCAL_RANK (kept if set, else 0) because DeepSpeed
    reads them from the environment. `backend` defaults to `default_backend(device)`.
    """
    global _host
    if dist.is_initialized():
        return
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR=master_addr,
                      MASTER_PORT=str(master_port))
    os.environ.setdefault("LOCAL_RANK", "0")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend or default_backend(device), init_method=f"tcp://{master_addr}:{master_port}",
                            rank=rank, world_size=world_size)
    # Collective: every rank reaches this line, so every rank creates the same groups.
    _host = None if serves_cpu(dist.get_backend_config()) else dist.new_group(backend="gloo")


def close_distributed() -> None:
    """Leave every process group once all ranks got here. A process that exits with live gloo
    groups can abort in their threads' destructors ("terminate called without an active exception")."""
    global _host
    if dist.is_initialized():
        barrier()
        dist.destroy_process_group()
    _host = None


def serves_cpu(backend_config: str) -> bool:
    """Whether a group's backend config ("gloo", "nccl", "cpu:gloo,cuda:nccl", ...) takes CPU tensors."""
    return any(part.startswith("cpu:") or part == "gloo" for part in backend_config.split(","))


def host_group() -> dist.ProcessGroup | None:
    """The group for CPU tensors (None: the default group serves them)."""
    return _host


def group_for(device: torch.device) -> dist.ProcessGroup | None:
    """The group that carries tensors of `device` (None = the default group)."""
    return _host if device.type == "cpu" else None


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
        dist.barrier(group=_host)


def all_reduce_host(values: list[float], op: Literal["sum", "max"]) -> list[float]:
    """Sum or max of each host-side value over all ranks, in one collective on the host group."""
    if world_size() == 1:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM, group=_host)
    return t.tolist()


def count_range(n: int) -> tuple[int, int]:
    """(min, max) of `n` over all ranks in one collective."""
    most, neg_fewest = all_reduce_host([n, -n], "max")
    return -int(neg_fewest), int(most)


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Mean of each value over all ranks; every rank must pass the same keys."""
    names = sorted(values)
    sums = all_reduce_host([values[k] for k in names], "sum")
    return {k: s / world_size() for k, s in zip(names, sums)}
