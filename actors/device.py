"""The one device an actor owns, taken from Ray's assignment (docs/design.md §8.1)."""
from __future__ import annotations

import os

import ray
import torch


def device_for_actor() -> torch.device:
    """cuda:0 when Ray assigned this actor a GPU (Ray then sets CUDA_VISIBLE_DEVICES to it), else
    the CPU. Ray leaves CUDA_VISIBLE_DEVICES unset for an actor without GPUs, so torch, DeepSpeed
    and NCCL would see every GPU of the node, outside Ray's accounting (two such learner ranks
    both land on GPU 0): hide them. Call it before anything in the process initialises CUDA."""
    if ray.get_gpu_ids():
        # A GPU resource without a CUDA device is a test cluster's fake GPU: run on the CPU.
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    return torch.device("cpu")
