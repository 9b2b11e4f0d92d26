"""The learner uses the device its caller gives it, never whatever torch.cuda reports: on a GPU
node an actor Ray gave no GPU must stay on the CPU (two such ranks would otherwise share cuda:0)."""
import torch
import torch.distributed as dist

from engine_workers import engine_cfg, full_batch, loss_fn, make_model
from learner import distributed
from learner.engine import TrainEngine


def test_engine_and_process_group_follow_the_given_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU node; this actor got none
    cpu = torch.device("cpu")
    distributed.init_distributed(0, 1, "127.0.0.1", distributed.free_port(), cpu)
    try:
        assert "nccl" not in dist.get_backend_config()
        engine = TrainEngine(make_model(), engine_cfg(), cpu)
        assert engine.device == cpu and all(p.device == cpu for p in engine.module.parameters())
        assert engine.train_step(full_batch(0), loss_fn)["loss"] > 0
    finally:
        distributed.close_distributed()
