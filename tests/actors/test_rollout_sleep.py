"""A colocated rollout worker's sleep and wake, in-process (no Ray): the frozen vision tower, which no weight
sync carries, waits in host memory and comes back from there, not from the checkpoint; after the sync the
worker decodes exactly what it decoded before sleeping; the wake loses the fused projections (models/fused.py)."""
from __future__ import annotations

import random

import torch

import actors.rollout_worker as rollout_worker
from actors.config import ModelSection
from actors.rollout_worker import RolloutWorker
from models.fused import fuse_projections, is_fused
from models.tiny import write_tiny_checkpoint
from models.tokenizer import build_tiny_tokenizer
from models.transformer import synced_state
from models.vision import image_placeholders
from rollout.params import SamplingParams
from rollout.requests import PromptRecord
from tasks.builtin.shapes import sample_shapes
from tasks.prompts import encode_prompt


def test_a_sleeping_vlm_worker_wakes_with_its_frozen_tower_from_host_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(rollout_worker, "device_for_actor", lambda: torch.device("cpu"))
    path = str(write_tiny_checkpoint(tmp_path / "model", seed=1, family="llada_v"))
    worker = RolloutWorker(0, ModelSection(name="tiny_llada_v", family="llada_v", path=path), path)
    cfg, tokenizer = worker.model.config, build_tiny_tokenizer()
    rows = [sample_shapes(random.Random(i)) for i in range(2)]
    ids = [encode_prompt(r, tokenizer, "plain", "choice", image_placeholders(cfg)) for r in rows]
    shard = [PromptRecord(f"p{i}", ids[i], s, r["image"]) for i, r in enumerate(rows) for s in range(2)]
    params = SamplingParams(block_size=4, steps_per_block=2, max_new_tokens=8, temperature=1.0, seed=3)
    fuse_projections(worker.model)  # what generate() does on a GPU
    _, before = worker.generate(shard, params)
    state = {k: v.clone() for k, v in worker.model.state_dict().items()}
    synced = synced_state(worker.model)
    tower = [k for k in state if k.startswith("vision_tower.")]
    assert tower and not set(tower) & set(synced)  # frozen: the sync will not bring these back

    freed = worker.sleep()
    assert worker.model.embed_tokens.weight.is_meta and worker.model.vision_tower.device.type == "meta"
    assert freed == sum(t.numel() * t.element_size() for t in synced.values())  # on a CPU the tower stays

    def no_checkpoint_read(*_args, **_kw):
        raise AssertionError("waking read the checkpoint")

    monkeypatch.setattr(rollout_worker, "load_model", no_checkpoint_read)
    worker.wake()
    with torch.no_grad():  # what the weight sync then does: every synced tensor overwritten
        for name, tensor in synced_state(worker.model).items():
            tensor.copy_(state[name])
    assert all(torch.equal(state[k], v) for k, v in worker.model.state_dict().items())
    assert not is_fused(worker.model)  # to_empty gave every weight its own memory again
    _, after = worker.generate(shard, params)  # unfused on a CPU: the same tokens
    assert len(before.to_trajectories()) == 4 and after.to_trajectories() == before.to_trajectories()
