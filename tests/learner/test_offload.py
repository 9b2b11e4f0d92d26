"""Colocation's offload round trip: the engine's device state goes to host memory and comes back
identical (weights, gradients, AdamW moments), and training continues exactly as without it."""
import torch

from engine_workers import engine_cfg, full_batch, loss_fn, make_model
from learner.engine import TrainEngine


def test_offload_frees_every_device_tensor_and_reload_continues_exactly():
    engine, twin = TrainEngine(make_model(), engine_cfg()), TrainEngine(make_model(), engine_cfg())
    for e in (engine, twin):
        e.train_step(full_batch(0), loss_fn)  # AdamW moments exist
    weights = {k: v.clone() for k, v in engine.full_state_dict().items()}
    params = list(engine.module.parameters())
    param_bytes = sum(p.nbytes for p in params)

    moved = engine.offload()
    # Weights + two AdamW moments (the step cleared the gradients) + AdamW's fp32 step counters,
    # which are on this device here because the device is the CPU.
    assert moved == 3 * param_bytes + 4 * len(params)
    assert all(p.numel() == 0 for p in engine.module.parameters())  # the device storage is gone
    assert engine.offload() == moved  # idempotent: nothing moves twice

    engine.reload()
    assert {k: torch.equal(v, weights[k]) for k, v in engine.full_state_dict().items()} == dict.fromkeys(weights, True)
    for e in (engine, twin):  # a step that reads the moments: lost or changed moments would show
        e.train_step(full_batch(1), loss_fn)
    got, want = engine.full_state_dict(), twin.full_state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
