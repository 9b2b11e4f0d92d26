"""A rollout model that is not the learner's (another config, a dtype that cannot hold the wire's)
is refused by every receiver before anything is written, naming the first tensor that differs;
a receiver that matches gets every tensor exactly, its fused projections still one buffer. No Ray:
the group's broadcast and CUDA IPC's export are faked on the CPU."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from actors.weight_sync.buckets import pack, plan_buckets, publish, wire_layout
from actors.weight_sync.collective import GroupHandle, GroupReceiver
from actors.weight_sync.cuda_ipc import CudaIpcReceiver, CudaIpcSender
from actors.weight_sync.planner import COLLECTIVE, CUDA_IPC, SHARED_MEMORY
from actors.weight_sync.shared_memory import SharedMemoryReceiver, SharedMemorySender
from models.fused import fuse_projections, is_fused
from models.tiny import synthetic_config
from models.transformer import DiffusionLM, synced_state

CPU = torch.device("cpu")


def _model(seed: int, dtype: torch.dtype = torch.float32, **shape) -> DiffusionLM:
    torch.manual_seed(seed)
    return DiffusionLM(synthetic_config(12, family="tiny", **shape)).to(dtype).eval()


class _Done:
    def wait(self) -> None:
        pass


class _FakeGroup:
    """A broadcast group whose rank 0 already holds `sent`: each broadcast lands at once."""

    def __init__(self, sent: list[torch.Tensor]) -> None:
        self.sent, self.device = sent, CPU

    def broadcast(self, buckets: list[torch.Tensor]) -> list[_Done]:
        for bucket, sent in zip(buckets, self.sent):
            bucket.copy_(sent)
        return [_Done() for _ in buckets]


def _deliver(kind: str, src: DiffusionLM, dst: DiffusionLM, wire: torch.dtype, tmp_path: Path) -> None:
    """Publish `src` in the `wire` dtype through `kind` and load it into `dst`."""
    state = synced_state(src)
    layout = wire_layout([(n, t.dtype, tuple(t.shape)) for n, t in state.items()], wire)
    if kind == COLLECTIVE:
        index, sizes = plan_buckets(layout, bucket_bytes=256)  # smaller than the largest tensor: many buckets
        buckets = [torch.empty(n, dtype=torch.uint8) for n in sizes]
        pack(state.items(), [(index, buckets)])
        GroupReceiver(_FakeGroup(buckets)).load(GroupHandle(1, index, sizes, transport=COLLECTIVE), dst)
    elif kind == CUDA_IPC:
        sender = CudaIpcSender(CPU, "GPU-0", export=lambda buckets: [{"bucket": b} for b in buckets])
        handle = publish(state.items(), layout, {CUDA_IPC: sender}, 1)[CUDA_IPC]
        CudaIpcReceiver(CPU, "GPU-0", open_=lambda exports, device: [e["bucket"] for e in exports]).load(handle, dst)
    else:
        sender = SharedMemorySender(f"test-mismatch-{tmp_path.name}")
        try:
            handle = publish(state.items(), layout, {SHARED_MEMORY: sender}, 1)[SHARED_MEMORY]
            SharedMemoryReceiver().load(handle, dst)
        finally:
            sender.close()


KINDS = [COLLECTIVE, CUDA_IPC, SHARED_MEMORY]
MISMATCHES = [  # (learner's shape, rollout model's shape, the error)
    pytest.param(dict(intermediate_size=64), dict(intermediate_size=100),  # copy_ failed halfway through
                 r"layers\.0\.mlp\.gate_proj\.weight is \[64, 32\] from the learner but \[100, 32\]", id="mlp"),
    pytest.param(dict(hidden_size=32), dict(hidden_size=64),
                 r"embed_tokens\.weight is \[12, 32\] from the learner but \[12, 64\]", id="hidden"),
    pytest.param(dict(num_layers=3), dict(num_layers=2),  # the third layer was dropped without a word
                 r"carries tensors this model lacks \['layers\.2\.", id="fewer-layers"),
    pytest.param(dict(num_layers=2), dict(num_layers=3), r"is missing tensors \['layers\.2\.", id="more-layers"),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sent, held, error", MISMATCHES)
def test_a_rollout_model_of_another_config_is_refused_before_any_write(kind, sent, held, error, tmp_path):
    src, dst = _model(1, **sent), _model(2, **held)
    before = {k: t.clone() for k, t in dst.state_dict().items()}
    with pytest.raises(ValueError, match=error):
        _deliver(kind, src, dst, torch.float32, tmp_path)
    after = dst.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], t) for k, t in before.items())


@pytest.mark.parametrize("kind", KINDS)
def test_a_wire_dtype_the_rollout_model_cannot_hold_exactly_is_refused(kind, tmp_path):
    src, dst = _model(1), _model(2, torch.bfloat16)
    before = {k: t.clone() for k, t in dst.state_dict().items()}
    with pytest.raises(ValueError, match=r"embed_tokens\.weight arrives as torch\.float32.*torch\.bfloat16"):
        _deliver(kind, src, dst, torch.float32, tmp_path)
    assert all(torch.equal(dst.state_dict()[k], t) for k, t in before.items())


@pytest.mark.parametrize("kind", KINDS)
def test_a_wider_rollout_dtype_gets_the_wire_values_exactly_and_stays_fused(kind, tmp_path):
    src, dst = _model(1), _model(2)
    fuse_projections(dst)
    _deliver(kind, src, dst, torch.bfloat16, tmp_path)
    got = dst.state_dict()
    assert all(torch.equal(got[k], t.to(torch.bfloat16).float()) for k, t in src.state_dict().items())
    assert is_fused(dst) or kind == SHARED_MEMORY  # a CPU slot binding makes parameters views of the slot instead
