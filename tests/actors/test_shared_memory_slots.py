"""Zero-copy shared-memory weight sync without Ray: a receiver's CPU parameters are views of the slot
holding its version (two slots alternating by version), and no version can be written into a slot
a worker decodes from — the writer fails loudly instead, and a worker whose slot was rewritten
refuses to decode. Two receivers in one process hold their locks through separate open files, as
two worker processes do."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from actors.weight_sync.buckets import publish, unpack
from actors.weight_sync.cuda_ipc import CudaIpcReceiver, CudaIpcSender
from actors.weight_sync.planner import CUDA_IPC, SHARED_MEMORY
from actors.weight_sync.registry import Receivers
from actors.weight_sync.shared_memory import HEADER, SharedMemoryReceiver, SharedMemorySender


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 3), nn.LayerNorm(3))  # odd sizes: alignment
        self.register_buffer("steps", torch.zeros(3, dtype=torch.int64))  # a buffer: copied, never bound


def _stream(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(name, t.detach()) for name, t in model.state_dict().items()]


def _layout(model: nn.Module) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    return [(name, t.dtype, tuple(t.shape)) for name, t in model.state_dict().items()]


def _version(src: Net, v: int) -> dict[str, torch.Tensor]:
    """Give the source weights that name version v; a copy of them."""
    torch.manual_seed(v)
    with torch.no_grad():
        for p in src.parameters():
            p.normal_()
        src.steps.fill_(v)
    return {k: t.clone() for k, t in src.state_dict().items()}


def _same(model: nn.Module, want: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(t, want[k]) for k, t in model.state_dict().items())


def _in_slot(t: torch.Tensor, receivers: Receivers, sender: SharedMemorySender, slot: int) -> bool:
    """Whether `t` lies in the receiver's mapping of the sender's slot."""
    buf = receivers.receivers[SharedMemoryReceiver].maps[str(sender.paths[slot])][2]
    return buf.data_ptr() <= t.data_ptr() < buf.data_ptr() + buf.numel()


@pytest.fixture
def sender(tmp_path):
    s = SharedMemorySender(f"test-slots-{tmp_path.name}")
    yield s
    s.close()


def test_receivers_decode_from_the_slot_and_a_slot_in_use_cannot_be_overwritten(sender):
    src, a, b = Net(), Net(), Net()
    ra, rb = Receivers(torch.device("cpu")), Receivers(torch.device("cpu"))

    def sync(v: int, *targets: tuple[Receivers, Net]) -> None:
        handle = publish(_stream(src), _layout(src), {SHARED_MEMORY: sender}, v)[SHARED_MEMORY]
        for receivers, model in targets:
            receivers.load(handle, model)

    v1 = _version(src, 1)
    sync(1, (ra, a), (rb, b))
    for receivers, model in ((ra, a), (rb, b)):
        assert _same(model, v1)
        assert all(_in_slot(p, receivers, sender, 1) for p in model.parameters())  # views of slot 1: no copy
        assert not _in_slot(model.steps, receivers, sender, 1)  # buffers stay the model's own (copied)
    v2 = _version(src, 2)
    with rb.reading(b, 1):  # async: b still decodes version 1 while 2 is published
        sync(2, (ra, a))  # into slot 0: a rebinds to it
        assert _same(b, v1) and _same(a, v2)
        _version(src, 3)
        with pytest.raises(RuntimeError, match=r"would overwrite shared-memory slot .*-1 \(version 1\) with "
                                               r"version 3 while a rollout worker decodes from it"):
            sync(3, (ra, a))
        assert _same(b, v1)  # not a byte of the version b decodes with changed
    v3 = _version(src, 3)
    sync(3, (ra, a))  # the refused write changed nothing: once b is done, 3 goes to slot 1
    assert _same(a, v3) and all(_in_slot(p, ra, sender, 1) for p in a.parameters())
    with pytest.raises(RuntimeError, match="holds version 3, not 1: the weights this rollout worker was synced to"):
        with rb.reading(b, 1):  # b's version is gone: it must not decode with what the slot holds now
            pass


def test_a_late_or_restarted_worker_gets_the_version_its_slot_holds_without_a_write(sender):
    """Publishing again a version its slot holds (a restarted or late worker's sync) writes nothing,
    even when the learner has moved on (async: its weights are the next version's by then), so the
    workers decoding from that slot are undisturbed and the new one gets the same bytes."""
    src, early, late = Net(), Net(), Net()
    r_early, r_late = Receivers(torch.device("cpu")), Receivers(torch.device("cpu"))
    v4 = _version(src, 4)
    r_early.load(publish(_stream(src), _layout(src), {SHARED_MEMORY: sender}, 4)[SHARED_MEMORY], early)
    _version(src, 5)  # the update after it (async: while `early` decodes version 4)
    with r_early.reading(early, 4):
        r_late.load(publish(_stream(src), _layout(src), {SHARED_MEMORY: sender}, 4)[SHARED_MEMORY], late)
    assert _same(early, v4) and _same(late, v4)


def test_another_transport_loads_into_the_models_own_memory_not_the_read_only_slot(sender):
    """A worker moved to another transport (a restarted group member reads the object store) first
    gives its parameters their own memory again: the slot's mapping is read-only."""
    exported: dict[int, torch.Tensor] = {}

    def export(buckets):
        exported.update({id(b): b for b in buckets})
        return [{"storage_handle": id(b), "storage_size_bytes": b.numel()} for b in buckets]

    def open_(exports, device):
        return [exported[e["storage_handle"]].clone() for e in exports]

    src, model, receivers = Net(), Net(), Receivers(torch.device("cpu"))
    receivers.receivers[CudaIpcReceiver] = CudaIpcReceiver(torch.device("cpu"), "GPU-0", open_=open_)
    v1 = _version(src, 1)
    first = publish(_stream(src), _layout(src), {SHARED_MEMORY: sender}, 1)[SHARED_MEMORY]
    receivers.load(first, model)
    v2 = _version(src, 2)
    handle = publish(_stream(src), _layout(src), {CUDA_IPC: CudaIpcSender(torch.device("cpu"), "GPU-0", export)},
                     2)[CUDA_IPC]
    receivers.load(handle, model)
    assert _same(model, v2)
    assert not any(_in_slot(p, receivers, sender, 1) for p in model.parameters())
    slot = unpack([sender.slots[1].buf[HEADER:]], first.index)
    assert all(torch.equal(slot[k], t) for k, t in v1.items())  # the load wrote nothing into the slot
    with receivers.reading(model, 2):  # its own memory now: no slot to hold
        pass


def test_a_slot_file_unlinked_or_re_created_since_the_load_is_no_one_elses_to_write(tmp_path):
    """The run closed its slots (the files are unlinked) or a new sender made new files under the
    same names: the pages the worker decodes from are written by no one any more, so it decodes on
    without a lock or a version check against the new file."""
    src, model, receivers = Net(), Net(), Receivers(torch.device("cpu"))
    first = SharedMemorySender(f"test-gone-{tmp_path.name}")
    v1 = _version(src, 1)
    receivers.load(publish(_stream(src), _layout(src), {SHARED_MEMORY: first}, 1)[SHARED_MEMORY], model)
    first.close()
    with receivers.reading(model, 1):
        assert _same(model, v1)
    second = SharedMemorySender(f"test-gone-{tmp_path.name}")
    try:
        _version(src, 3)
        publish(_stream(src), _layout(src), {SHARED_MEMORY: second}, 3)  # slot 1 again, a new file
        with receivers.reading(model, 1):
            assert _same(model, v1)
    finally:
        second.close()


def test_a_version_whose_write_failed_midway_is_written_again_not_published_as_the_old_one(sender):
    """A stream that fails midway (a ZeRO-3 gather, a cast out of memory) leaves the slot half
    rewritten: publishing the version it held before must write it again, not announce those bytes."""
    src = Net()
    layout = _layout(src)
    v1 = _version(src, 1)
    publish(_stream(src), layout, {SHARED_MEMORY: sender}, 1)

    def failing():
        for i, (name, t) in enumerate(_stream(src)):
            if i == 2:
                raise RuntimeError("gather failed")
            yield name, t + 100

    with pytest.raises(RuntimeError, match="gather failed"):
        publish(failing(), layout, {SHARED_MEMORY: sender}, 3)  # slot 1, as version 1
    handle = publish(_stream(src), layout, {SHARED_MEMORY: sender}, 1)[SHARED_MEMORY]
    dst = Net()
    SharedMemoryReceiver().load(handle, dst)
    assert _same(dst, v1)
