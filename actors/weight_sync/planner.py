"""Which transport carries the weights to each rollout worker, decided once per learner group from
facts the actors report (node, GPU). Pure Python, so CPU tests can feed any placement.

The transport names live here and nowhere else as literals.
"""
from __future__ import annotations

from dataclasses import dataclass

AUTO = "auto"
CUDA_IPC = "cuda_ipc"  # same GPU as learner rank 0: the worker reads rank 0's device buckets
NCCL = "nccl"  # learner rank 0 and the worker on different GPUs: an NCCL broadcast group
SHARED_MEMORY = "shared_memory"  # same node: one /dev/shm file
COLLECTIVE = "collective"  # anywhere: a gloo broadcast group over TCP
OBJECT_STORE = "object_store"  # anywhere: Ray's object store (a restarted group member's fallback)
TRANSPORTS = (SHARED_MEMORY, COLLECTIVE, NCCL, CUDA_IPC, OBJECT_STORE)
GROUP_TRANSPORTS = (COLLECTIVE, NCCL)  # formed as a group (all members join; a broadcast is all-or-none)
AUTO_ORDER = (CUDA_IPC, NCCL, SHARED_MEMORY, COLLECTIVE)  # the first that fits a worker wins


@dataclass(frozen=True)
class Placement:
    """Where an actor runs. `gpu`: its GPU's UUID (None on CPU). `shm_problem` (learner rank 0
    only): why the shared-memory buffer cannot be created on its node, None when it fits."""
    node_id: str
    gpu: str | None = None
    shm_problem: str | None = None


def check_transport(name: str, key: str = "weight_sync.transport") -> str:
    if name not in (AUTO, *TRANSPORTS):
        raise ValueError(f"{key}={name!r}: allowed values are {', '.join((AUTO, *TRANSPORTS))}")
    return name


def why_not(kind: str, learner: Placement, worker: Placement, taken: set[tuple[str, str]]) -> str | None:
    """Why `kind` cannot serve `worker` (None: it can). `taken`: (transport, GPU) pairs already
    given to earlier workers."""
    if kind == CUDA_IPC:
        if learner.gpu is None or worker.gpu != learner.gpu:
            return "the worker does not share learner rank 0's GPU"
        if (CUDA_IPC, worker.gpu) in taken:  # torch counts one reader per export of a CUDA buffer
            return "another worker already reads learner rank 0's GPU through CUDA IPC (one reader)"
    if kind == NCCL:
        if learner.gpu is None or worker.gpu is None:
            return "NCCL needs learner rank 0 and the worker on GPUs"
        if worker.gpu == learner.gpu:
            return f"the worker shares learner rank 0's GPU (NCCL takes one rank per GPU; {CUDA_IPC} serves it)"
        if (NCCL, worker.gpu) in taken:
            return "the worker shares its GPU with another NCCL member (NCCL takes one rank per GPU)"
    if kind == SHARED_MEMORY:
        if worker.node_id != learner.node_id:
            return "the worker runs on another node than learner rank 0"
        return learner.shm_problem
    return None


def plan_transports(learner: Placement, workers: list[Placement], forced: str = AUTO) -> list[str]:
    """A transport per worker: the first of AUTO_ORDER that fits, or `forced` for all of them
    (an error naming the worker when it cannot serve one)."""
    check_transport(forced)
    plan: list[str] = []
    taken: set[tuple[str, str]] = set()
    for i, worker in enumerate(workers):
        if forced == AUTO:
            kind = next(k for k in AUTO_ORDER if why_not(k, learner, worker, taken) is None)
        else:
            kind = forced
            problem = why_not(kind, learner, worker, taken)
            if problem:
                raise ValueError(f"weight_sync.transport={kind} cannot serve rollout-{i}: {problem}. "
                                 f"weight_sync.transport={AUTO} picks a transport per worker.")
        if worker.gpu is not None:
            taken.add((kind, worker.gpu))
        plan.append(kind)
    return plan
