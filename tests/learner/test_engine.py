"""TrainEngine: DeepSpeed ZeRO / DDP on 2 gloo ranks equal the single-process torch step; state
persists and resumes; schedule, clipping, empty steps and config checks.

Tolerance: fp32 everywhere; the ranks' gradient all-reduce sums in a different order than the
single-process backward; after two AdamW steps (lr 1e-3) parameters differ by <= 6e-8, so atol 1e-6.
"""
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from pydantic import ValidationError

from engine_workers import (
    COLS,
    ROWS,
    batch,
    engine_cfg,
    full_batch,
    loss_fn,
    make_model,
    rank_micro_batches,
    two_rank_worker,
)
from learner.distributed import free_port
from learner.engine import TrainEngine
from learner.engine_config import EngineConfig
from learner.optim import lr_factor
from models.checkpoint import load_model

ATOL = 1e-6


def assert_same_weights(got: dict, want: dict, atol: float = ATOL) -> None:
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=atol, rtol=0, msg=name)


def reference_steps(n: int = 2) -> list[tuple[dict, dict]]:
    """Single process, plain torch, whole batch: (metrics, state dict) after each step."""
    engine = TrainEngine(make_model(), engine_cfg())
    return [(engine.train_step(full_batch(s), loss_fn), engine.full_state_dict()) for s in range(n)]


@pytest.fixture(scope="module")
def reference():
    return reference_steps()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Runs engine_workers.two_rank_worker once on 2 gloo ranks; returns (rank0, rank1, out dir)."""
    out = tmp_path_factory.mktemp("two_ranks")
    mp.spawn(two_rank_worker, args=(free_port(), str(out)), nprocs=2)
    return torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt"), out


@pytest.mark.parametrize("run", ["zero2", "zero3", "zero0", "ddp"])
def test_two_ranks_match_single_process(two_ranks, reference, run):
    """zero2: optimizer offload, two 1-row micro-batches per rank; zero3: param offload, gradient
    checkpointing, 2 micro-batches on rank 0 but 1 on rank 1; zero0: one micro-batch; ddp: torch."""
    for (got_metrics, got_state), (want_metrics, want_state) in zip(two_ranks[0][run], reference):
        assert_same_weights(got_state, want_state)
        for key in ("loss", "grad_norm", "lr", "token_frac"):
            assert got_metrics[key] == pytest.approx(want_metrics[key], rel=1e-5), key
    assert reference[0][0]["grad_norm"] > 1.0  # so clipping (grad_clip=1) was part of the comparison


def test_deepspeed_save_load_then_step_equals_uninterrupted(two_ranks):
    rank0 = two_ranks[0]
    assert rank0["zero2_resumed_step"] == 1
    resumed_metrics, resumed_state = rank0["zero2_resumed"]
    metrics, state = rank0["zero2"][1]
    assert_same_weights(resumed_state, state, atol=0)
    assert resumed_metrics == metrics


def test_zero3_module_forward_full_state_dict_and_export(two_ranks, reference):
    rank0, rank1, out = two_ranks
    final = reference[-1][1]
    model = make_model()
    model.load_state_dict(final)
    with torch.no_grad():
        want_logits = model(batch(9), torch.arange(COLS).expand(ROWS, COLS))  # the worker's probe
    torch.testing.assert_close(rank0["zero3_logits"], want_logits, atol=1e-5, rtol=0)
    assert all(state == {} for _, state in rank1["zero3"])  # only rank 0 materialises weights
    assert_same_weights(load_model(out / "zero3_hf").state_dict(), final)


def test_empty_steps_across_ranks(two_ranks):
    rank0, rank1, _ = two_ranks
    assert "some ranks got no micro-batches" in rank0["one_rank_empty"]
    assert "some ranks got no micro-batches" in rank1["one_rank_empty"]
    assert rank0["all_empty"] == rank1["all_empty"] == {"skipped": 1.0}


def manual_adamw(batches: list, clip: float) -> tuple[dict, list[float]]:
    """What the engine must do, written out: one AdamW for all steps, optional clipping."""
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    norms = []
    for mbs in batches:
        sum(loss_fn(model, mb)[0] for mb in mbs).backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip or float("inf"))))
        opt.step()
        opt.zero_grad()
    return model.state_dict(), norms


def scaled_batch(step: int, scale: float) -> list:
    """The step's batch in two micro-batches, loss scaled so the gradient norm is `scale`-ish."""
    ids = full_batch(step)[0][0]
    return [(part, ids.numel() / scale) for part in ids.split(2)]


def test_optimizer_state_persists_across_steps():
    batches = [full_batch(0), full_batch(1)]
    engine = TrainEngine(make_model(), engine_cfg(weight_decay=0.0, grad_clip=0.0))
    for mbs in batches:
        engine.train_step(mbs, loss_fn)
    kept = engine.full_state_dict()
    assert_same_weights(kept, manual_adamw(batches, clip=0.0)[0], atol=1e-7)

    fresh_each_step = make_model()
    for mbs in batches:  # a new engine (new AdamW) per step, as the reference implementation did
        TrainEngine(fresh_each_step, engine_cfg(weight_decay=0.0, grad_clip=0.0)).train_step(mbs, loss_fn)
    diff = max((kept[k] - v).abs().max().item() for k, v in fresh_each_step.state_dict().items())
    assert diff > 1e-5


def test_grad_clip_caps_the_norm_each_step():
    batches = [scaled_batch(0, 40.0), scaled_batch(1, 10.0)]  # different norms: clipping is not a rescale
    engine = TrainEngine(make_model(), engine_cfg(weight_decay=0.0, grad_clip=0.5))
    norms = [engine.train_step(mbs, loss_fn)["grad_norm"] for mbs in batches]
    clipped, want_norms = manual_adamw(batches, clip=0.5)
    assert norms == pytest.approx(want_norms, rel=1e-6)
    assert min(norms) > 0.5  # reported before clipping
    assert_same_weights(engine.full_state_dict(), clipped, atol=1e-7)
    unclipped, _ = manual_adamw(batches, clip=0.0)
    assert max((clipped[k] - v).abs().max().item() for k, v in unclipped.items()) > 1e-5


def test_lr_schedule_values():
    warm = EngineConfig(lr=1.0, warmup_steps=4)
    assert [lr_factor(s, warm) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cos = EngineConfig(lr=1.0, warmup_steps=2, schedule="cosine", total_steps=6, min_lr_ratio=0.1)
    assert [lr_factor(s, cos) for s in (0, 1, 3, 5, 9)] == pytest.approx([0.5, 1.0, 0.55, 0.1, 0.1])
    short = EngineConfig(lr=1.0, warmup_steps=5, schedule="cosine", total_steps=3, min_lr_ratio=0.1)
    assert [lr_factor(s, short) for s in range(3)] == pytest.approx([0.5, 1.0, 0.1])  # warm-up ends first

    engine = TrainEngine(make_model(), engine_cfg(lr=1e-2, warmup_steps=3))
    lrs = [engine.train_step(full_batch(s), loss_fn)["lr"] for s in range(4)]
    assert lrs == pytest.approx([1e-2 / 3, 2e-2 / 3, 1e-2, 1e-2])


def test_empty_step_is_a_noop():
    engine = TrainEngine(make_model(), engine_cfg(warmup_steps=2))
    before = engine.full_state_dict()
    assert engine.train_step([], loss_fn) == {"skipped": 1.0}
    assert engine.global_step == 0
    assert_same_weights(engine.full_state_dict(), before, atol=0)
    assert engine.train_step(full_batch(0), loss_fn)["lr"] == pytest.approx(1e-3 / 2)  # schedule not advanced


def test_torch_save_load_then_step_equals_uninterrupted(tmp_path: Path):
    engine = TrainEngine(make_model(), engine_cfg(warmup_steps=3))
    engine.train_step(full_batch(0), loss_fn)
    engine.save(tmp_path)
    want_metrics = engine.train_step(full_batch(1), loss_fn)

    resumed = TrainEngine(make_model(seed=1), engine_cfg(warmup_steps=3))
    resumed.load(tmp_path)
    assert resumed.global_step == 1
    assert resumed.train_step(full_batch(1), loss_fn) == want_metrics
    assert_same_weights(resumed.full_state_dict(), engine.full_state_dict(), atol=0)


def test_gradient_checkpointing_same_step():
    engine = TrainEngine(make_model(), engine_cfg(gradient_checkpointing=True))
    assert engine.module.gradient_checkpointing
    engine.train_step(full_batch(0), loss_fn)
    assert_same_weights(engine.full_state_dict(), reference_steps(1)[0][1], atol=1e-7)


@pytest.mark.parametrize("bad, key", [
    ({"zero_stage": 2}, "engine.backend=deepspeed"),
    ({"backend": "deepspeed", "offload_params": True, "zero_stage": 2}, "zero_stage=3"),
    ({"backend": "deepspeed", "offload_optimizer": True}, "zero_stage in"),
    ({"backend": "deepspeed", "dtype": "bf16"}, "accumulates bf16 gradients in bf16"),
    ({"schedule": "cosine", "warmup_steps": 5}, "total_steps"),
    ({"dtype": "fp16"}, "dtype"),
    ({"learning_rate": 1e-5}, "learning_rate"),
])
def test_config_errors_name_the_key(bad, key):
    with pytest.raises(ValidationError, match=key):
        EngineConfig(**bad)



def test_deepspeed_bf16_keeps_fp32_master_weights_and_accumulates_in_fp32():
    engine = TrainEngine(make_model(), engine_cfg(backend="deepspeed", zero_stage=2, dtype="bf16"))
    metrics = engine.train_step(rank_micro_batches(0, 0, split=True), loss_fn)  # two micro-batches
    zero = engine._backend.engine.optimizer  # DeepSpeed's ZeRO-2 optimizer
    assert next(engine.module.parameters()).dtype == torch.bfloat16  # DeepSpeed's bf16 module copy
    assert zero.gradient_accumulation_dtype == torch.float32  # its default would be bf16
    assert all(g.dtype == torch.float32 for g in zero.single_partition_of_fp32_groups)  # master weights
    assert torch.isfinite(torch.tensor(metrics["loss"]))
