"""Weight sync from the engine's streamed tensors: bit-exact on every transport, again on a second
sync that reuses the mapping/buckets after the weights changed, with ZeRO-3 ranks all gathering
and with plain-torch parameters moved into the shared buffer; and the disk fallback (an HF export
loaded into a fresh model)."""

from __future__ import annotations

import pytest
import ray
import torch
from torch import nn

from actors.start import start_run
from actors.weight_sync.buckets import publish
from actors.weight_sync.planner import COLLECTIVE, OBJECT_STORE, SHARED_MEMORY
from actors.weight_sync.publisher import WeightPublisher
from actors.weight_sync.shared_memory import SharedMemoryHandle, SharedMemoryReceiver, SharedMemorySender
from support import SMALL, compose_config
from tests.actors.weights import learner_weights, rollout_weights, same, weights_version


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
            assert isinstance(handle, SharedMemoryHandle) and handle.receiver is SharedMemoryReceiver
            receiver.load(handle, dst)
            assert same(dst.state_dict(), src.state_dict())
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
        SMALL + engine + [f"trainer.run_dir={tmp_path}", "mode=sft", "engine.lr=1e-2", "weight_sync.bucket_mb=1",
                          "trainer.logger=[]", "task.reward=tasks.builtin.arith:reward"]
    )  # several buckets on the tiny model
    run = start_run(cfg)
    ranks, workers = run.learner.ranks, run.rollout.workers
    pairs = [([23, 18, 24, 30], [24, 30]), ([25, 24, 18, 27, 30], [28, 30])]  # "0+1=1", "2+4=6"
    publishers = {kind: WeightPublisher(ranks, workers, forced=kind) for kind in (SHARED_MEMORY, OBJECT_STORE,
                                                                                    COLLECTIVE)}
    try:
        for version, kind in enumerate(list(publishers) * 2 + ["disk"], start=1):
            ray.get([a.sft_step.remote(pairs, version) for a in ranks])  # a cheap update (mode=sft)
            want = learner_weights(ranks)
            assert not same(want, rollout_weights(workers[0])), "weights should change"
            if kind == "disk":
                ray.get([a.export_hf.remote(str(tmp_path / "export")) for a in ranks])
                ray.get([w.load_from_disk.remote(str(tmp_path / "export"), version) for w in workers])
            else:
                publishers[kind].publish(version)
            assert [weights_version(w) for w in workers] == [version, version]
            for w in workers:
                assert same(rollout_weights(w), want), (version, kind)
    finally:
        run.close()
