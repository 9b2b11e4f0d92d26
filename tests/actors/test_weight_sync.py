"""Weight sync from the engine's streamed tensors: bit-exact on every transport, again on a second
sync that reuses the mapping/buckets after the weights changed, with ZeRO-3 ranks all gathering
and with plain-torch parameters moved into the shared buffer; and the disk fallback (an HF export loaded into a
fresh model)."""

from __future__ import annotations

import pytest
import ray
import torch
from torch import nn

from actors.pools import create_pools
from actors.run import model_path
from actors.sync import sync_weights
from actors.weight_sync.buckets import publish
from actors.weight_sync.planner import COLLECTIVE, OBJECT_STORE, SHARED_MEMORY
from actors.weight_sync.shared_memory import SharedMemoryReceiver, SharedMemorySender
from support import SMALL, compose_config


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _stream(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(name, t.detach()) for name, t in model.state_dict().items()]


def _layout(model: nn.Module) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    return [(name, t.dtype, tuple(t.shape)) for name, t in model.state_dict().items()]


def test_shared_memory_keeps_its_mapping_across_versions(tmp_path):
    src = nn.Sequential(nn.Linear(5, 3), nn.LayerNorm(3)).to(torch.bfloat16)  # odd sizes: alignment
    dst = nn.Sequential(nn.Linear(5, 3), nn.LayerNorm(3)).to(torch.bfloat16)
    sender, receiver = SharedMemorySender(f"test-{tmp_path.name}"), SharedMemoryReceiver()
    try:
        mappings = []
        for version in (1, 2):
            with torch.no_grad():
                for p in src.parameters():
                    p.normal_()
            handle = publish(_stream(src), _layout(src), {SHARED_MEMORY: sender}, version)[SHARED_MEMORY]
            receiver.load(handle, dst)
            assert _equal(dst.state_dict(), src.state_dict())
            mappings.append(receiver.buf)
        assert mappings[0] is mappings[1]  # the second version reused the first one's mapping
    finally:
        sender.close()


@pytest.mark.parametrize(
    "engine",
    [
        ["cluster.learner.num_workers=2", "engine.backend=deepspeed", "engine.zero_stage=3"],
        ["engine.backend=torch"],  # after the first shared-memory sync the parameters live in its buffer
    ],
    ids=["zero3", "torch_shared_parameters"],
)
def test_every_transport_is_bit_exact_twice_and_disk(ray_session, tmp_path, engine):
    cfg = compose_config(
        SMALL + engine + [f"trainer.run_dir={tmp_path}", "mode=sft", "engine.lr=1e-2", "weight_sync.bucket_mb=1"]
    )  # several buckets on the tiny model
    pools = create_pools(
        cfg, model_path(cfg, tmp_path), "tasks.builtin.arith:reward", f"test-weight-sync-{len(engine)}"
    )
    pairs = [([23, 18, 24, 30], [24, 30]), ([25, 24, 18, 27, 30], [28, 30])]  # "0+1=1", "2+4=6"
    kinds = [SHARED_MEMORY, OBJECT_STORE, COLLECTIVE]
    try:
        for version, kind in enumerate(kinds * 2 + ["disk"], start=1):
            ray.get([a.sft_step.remote(pairs, version) for a in pools.learner])  # a cheap update (mode=sft)
            learner = ray.get([a.state_dict.remote() for a in pools.learner])[0]
            assert not _equal(learner, ray.get(pools.rollout[0].state_dict.remote())), "weights should change"
            if kind == "disk":
                ray.get([a.export_hf.remote(str(tmp_path / "export")) for a in pools.learner])
                ray.get([w.load_from_disk.remote(str(tmp_path / "export"), version) for w in pools.rollout])
            else:
                pools.transport = [kind] * 2
                sync_weights(pools, version)
            assert ray.get([w.version.remote() for w in pools.rollout]) == [version, version]
            for w in pools.rollout:
                assert _equal(ray.get(w.state_dict.remote()), learner), (version, kind)
    finally:
        pools.shutdown()
