"""The learner's part of the GPU check: one TraceRL policy step (old log-probs, PPO loss, backward,
AdamW) of an SDAR-1.7B-shaped model with bf16 compute on 4k-token responses, rounds packed on one
clean copy, attention through FlexAttention block masks. Plain torch (no Ray, no DeepSpeed).

`learner_figures("cuda", smoke=False)` is what bench/gpu_check.py reports; smoke=True runs a tiny
configuration (on CPU too) so the code path is exercised without a GPU:

    python bench/gpu_check_learner.py --smoke --device cpu
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import emit, synthetic  # noqa: E402
from learner.algo_config import AlgoConfig  # noqa: E402
from learner.engine import TrainEngine  # noqa: E402
from learner.engine_config import EngineConfig  # noqa: E402
from learner.policy_update import PolicyUpdater  # noqa: E402
from models.slot_mask import SlotMask  # noqa: E402
from models.tiny import synthetic_config  # noqa: E402
from models.transformer import DiffusionLM  # noqa: E402

# Qwen3-1.7B / SDAR-1.7B shapes (conf/model/sdar_1_7b.yaml points at the real checkpoint).
SDAR_1_7B = dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_layers=28, num_heads=16,
                 num_kv_heads=8, head_dim=128, tie_word_embeddings=True, rope_theta=1_000_000.0)
TINY = dict(vocab_size=1000, hidden_size=64, intermediate_size=192, num_layers=2, num_heads=2, num_kv_heads=1,
            head_dim=32)


def flex_vs_dense(device: str) -> float:
    """Max |SlotMask attention - dense-mask SDPA| on random copies/blocks: on CUDA this runs the
    FlexAttention block mask, elsewhere the query-chunked path."""
    g = torch.Generator().manual_seed(0)
    R, T = 2, 700
    copy = torch.randint(0, 3, (R, T), generator=g)
    block = torch.randint(0, 40, (R, T), generator=g).sort(dim=1).values
    valid = torch.arange(T)[None] < torch.tensor([[T], [T - 123]])
    spec = SlotMask(copy, block, valid).to(device)
    q, k, v = (torch.randn(R, h, T, 64, generator=g).to(device) for h in (8, 2, 2))
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=spec.rows()[:, None], enable_gqa=True)
    return float((spec.attend(q, k, v, enable_gqa=True) - dense).abs().max())


def learner_figures(device: str, smoke: bool, responses: int = 4, response_len: int = 4096,
                    gradient_checkpointing: bool = True) -> dict:
    """One warm-up step (compiles FlexAttention), then one timed policy step; tokens/s counts the
    trained response tokens, slots/s every row slot the learner ran forward and backward."""
    if device.startswith("cuda") != torch.cuda.is_available():
        raise ValueError(f"device={device!r}: the learner engine runs on CUDA exactly when one is available")
    shape = TINY if smoke else SDAR_1_7B
    length = 64 if smoke else response_len
    block, prompt = 4, 64
    torch.manual_seed(0)
    cfg = synthetic_config(block_size=block, max_position_embeddings=prompt + length + 2 * block, **shape)
    with torch.device(device):
        model = DiffusionLM(cfg)
    engine = TrainEngine(model, EngineConfig(lr=1e-6, dtype="fp32" if smoke else "bf16",
                                             gradient_checkpointing=gradient_checkpointing))
    budget = prompt + (block + 1) * (length + block)  # one response's packed row per micro-batch
    updater = PolicyUpdater(engine, AlgoConfig(name="tracerl", token_budget=budget), cfg)
    trajs = synthetic(responses, prompt, length, block, cfg.vocab_size, seed=0)
    adv = torch.linspace(-1, 1, responses).tolist()
    updater.rl_step(trajs, adv, 0)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    metrics = updater.rl_step(trajs, adv, 1)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens = responses * length
    slots = responses * ((prompt + length - 1) // block * block + block * (length + block))  # clean + K copies
    return {
        "learner_flex_vs_dense_max_abs": flex_vs_dense(device),
        "learner_step_s": round(seconds, 3),
        "learner_tokens_per_s": round(tokens / seconds, 1),
        "learner_slots_per_s_approx": round(slots / seconds, 1),
        "learner_peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "learner_setup": {"model": "tiny" if smoke else "sdar-1.7b-shaped", "dtype": "fp32" if smoke else "bf16",
                          "responses": responses, "response_len": length, "block": block, "rounds": block,
                          "layout": "packed", "gradient_checkpointing": gradient_checkpointing,
                          "rows": metrics["rows"], "trained_tokens": metrics["trained_tokens"],
                          "params_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3)},
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    emit(learner_figures(a.device, a.smoke))
