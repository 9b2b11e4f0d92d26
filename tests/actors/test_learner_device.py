"""A learner actor's device and memory, checked without Ray (the actor classes are plain classes):
an actor Ray gave no GPU hides the node's GPUs; rebuilding the engines after the warm-up drops the
old ones before the new weights load (both at once would double the learner's memory)."""
import gc
import os
import weakref

import ray
import torch

import actors.learner_worker as learner_worker
from actors.device import device_for_actor
from actors.learner_worker import LearnerWorker
from models.tiny import write_tiny_checkpoint
from support import SMALL, compose_config


def test_an_actor_without_a_gpu_hides_the_nodes_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # what an actor would inherit; restored after
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device_for_actor() == torch.device("cpu")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_warm_start_rebuild_frees_the_old_engine_before_loading(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    path = str(write_tiny_checkpoint(tmp_path / "tiny"))
    cfg = compose_config([*SMALL, f"model.path={path}"])
    worker = LearnerWorker(0, 1, cfg, path, "test")
    worker._build(path, warmup=True)
    old = weakref.ref(worker.engine.module)
    alive_at_load = []
    real_load = learner_worker.load_model

    def load_model(*args, **kwargs):
        gc.collect()
        alive_at_load.append(old() is not None)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(learner_worker, "load_model", load_model)
    worker.start_rl(path)
    assert alive_at_load == [False, False]  # the policy, then the frozen start of RL (the ref_kl metric)
    assert all(p.dtype == torch.float32 for p in worker.engine.module.parameters())
