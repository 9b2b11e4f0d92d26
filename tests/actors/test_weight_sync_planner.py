"""The transport planner on fake placements: what auto picks for each kind of neighbour, and that a
forced transport which cannot serve a worker is refused with the worker and the reason named."""
from __future__ import annotations

import pytest

from actors.weight_sync.planner import (
    AUTO,
    COLLECTIVE,
    CUDA_IPC,
    NCCL,
    OBJECT_STORE,
    SHARED_MEMORY,
    TRANSPORTS,
    Placement,
    check_transport,
    plan_transports,
)

CPU_LEARNER = Placement("node-a")
GPU_LEARNER = Placement("node-a", gpu="GPU-0")
SHM_FULL = "weight sync's shared-memory buffer needs 17600 MiB in /dev/shm but 64 MiB are free there"


def test_cpu_learner_keeps_shared_memory_at_home_and_gloo_elsewhere():
    workers = [Placement("node-a"), Placement("node-b"), Placement("node-a", gpu="GPU-3")]
    assert plan_transports(CPU_LEARNER, workers) == [SHARED_MEMORY, COLLECTIVE, SHARED_MEMORY]


def test_gpu_learner_ipc_on_its_gpu_nccl_on_other_gpus_one_nccl_rank_per_gpu():
    workers = [
        Placement("node-a", gpu="GPU-0"),  # colocated with learner rank 0
        Placement("node-a", gpu="GPU-1"),
        Placement("node-b", gpu="GPU-7"),
        Placement("node-a", gpu="GPU-1"),  # shares GPU-1 with worker 1: NCCL takes one rank per GPU
        Placement("node-b", gpu="GPU-7"),
        Placement("node-a"),  # a CPU worker beside the learner
        Placement("node-c"),
        Placement("node-a", gpu="GPU-0"),  # a second worker on rank 0's GPU: IPC takes one reader
    ]
    assert plan_transports(GPU_LEARNER, workers) == [
        CUDA_IPC, NCCL, NCCL, SHARED_MEMORY, COLLECTIVE, SHARED_MEMORY, COLLECTIVE, SHARED_MEMORY]


def test_auto_avoids_a_dev_shm_too_small_for_a_version():
    learner = Placement("node-a", shm_problem=SHM_FULL)
    assert plan_transports(learner, [Placement("node-a"), Placement("node-b")]) == [COLLECTIVE, COLLECTIVE]


@pytest.mark.parametrize("forced,learner,worker,reason", [
    (CUDA_IPC, GPU_LEARNER, Placement("node-a", gpu="GPU-1"), "does not share learner rank 0's GPU"),
    (CUDA_IPC, CPU_LEARNER, Placement("node-a"), "does not share learner rank 0's GPU"),
    (NCCL, CPU_LEARNER, Placement("node-b", gpu="GPU-1"), "NCCL needs learner rank 0 and the worker on GPUs"),
    (NCCL, GPU_LEARNER, Placement("node-a", gpu="GPU-0"), "cuda_ipc serves it"),
    (SHARED_MEMORY, CPU_LEARNER, Placement("node-b"), "another node"),
    (SHARED_MEMORY, Placement("node-a", shm_problem=SHM_FULL), Placement("node-a"), SHM_FULL),
])
def test_forced_transport_that_cannot_serve_a_worker_names_it_and_why(forced, learner, worker, reason):
    with pytest.raises(ValueError) as err:
        plan_transports(learner, [worker], forced)
    assert f"weight_sync.transport={forced} cannot serve rollout-0" in str(err.value)
    assert reason in str(err.value)


def test_forced_nccl_refuses_a_second_rank_on_one_gpu_and_cuda_ipc_a_second_reader():
    with pytest.raises(ValueError, match="rollout-1: the worker shares its GPU with another NCCL member"):
        plan_transports(GPU_LEARNER, [Placement("node-b", gpu="GPU-5")] * 2, NCCL)
    with pytest.raises(ValueError, match="rollout-1: another worker already reads learner rank 0's GPU"):
        plan_transports(GPU_LEARNER, [Placement("node-a", gpu="GPU-0")] * 2, CUDA_IPC)


@pytest.mark.parametrize("forced", [COLLECTIVE, OBJECT_STORE])
def test_forced_host_transports_serve_anyone(forced):
    workers = [Placement("node-a", gpu="GPU-0"), Placement("node-b"), Placement("node-a")]
    assert plan_transports(GPU_LEARNER, workers, forced) == [forced] * 3


def test_unknown_transport_names_the_allowed_ones():
    with pytest.raises(ValueError) as err:
        plan_transports(CPU_LEARNER, [Placement("node-a")], "nvlink")
    assert str(err.value) == f"weight_sync.transport='nvlink': allowed values are {', '.join((AUTO, *TRANSPORTS))}"
    assert check_transport(NCCL) == NCCL
