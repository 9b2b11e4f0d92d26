"""The learner's section of the GPU check: TraceRL policy steps (old log-probs, PPO loss, backward,
AdamW) of an SDAR-1.7B-shaped model with bf16 compute on 4k-token responses, rounds packed on one
clean copy, attention through FlexAttention block masks. Plain torch (no Ray, no DeepSpeed).

`learner_step(setup)` is what bench/gpu_check.py runs; smoke runs a tiny fp32 configuration (on
CPU too) so the code path is exercised without a GPU, also standalone:

    python bench/gpu_check_learner.py --smoke --device cpu
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import emit, synthetic  # noqa: E402
from bench.gpu_check_common import Setup, gib, sync  # noqa: E402
from learner.algo_config import AlgoConfig  # noqa: E402
from learner.engine import TrainEngine  # noqa: E402
from learner.engine_config import EngineConfig  # noqa: E402
from learner.policy_update import PolicyUpdater  # noqa: E402
from models.tiny import synthetic_config  # noqa: E402
from models.transformer import DiffusionLM  # noqa: E402

# Qwen3-1.7B / SDAR-1.7B shapes (conf/model/sdar_1_7b.yaml points at the real checkpoint).
SDAR_1_7B = dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_layers=28, num_heads=16,
                 num_kv_heads=8, head_dim=128, tie_word_embeddings=True, rope_theta=1_000_000.0)
TINY = dict(vocab_size=1000, hidden_size=64, intermediate_size=192, num_layers=2, num_heads=2, num_kv_heads=1,
            head_dim=32)


class TimedEngine:
    """The engine, timing its train_step calls (forward, backward and optimizer step of every
    micro-batch): the rest of an rl_step is building rows and the old-log-prob pass."""

    def __init__(self, engine: TrainEngine) -> None:
        self.engine, self.train_step_s = engine, 0.0

    def train_step(self, micro_batches: list[Any], loss_fn: Any) -> dict[str, float]:
        sync(self.engine.device)
        start = time.perf_counter()
        out = self.engine.train_step(micro_batches, loss_fn)
        sync(self.engine.device)
        self.train_step_s += time.perf_counter() - start
        return out

    def __getattr__(self, name: str) -> Any:  # module, device, ... as the engine has them
        return getattr(self.engine, name)


def timed_step(updater: PolicyUpdater, engine: TimedEngine, trajs: list, adv: list[float], step: int) -> dict:
    """One rl_step: seconds in all and in train_step, peak memory, the update's metrics."""
    device = engine.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    engine.train_step_s = 0.0
    sync(device)
    start = time.perf_counter()
    metrics = updater.rl_step(trajs, adv, step)
    sync(device)
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 3), "train_step_s": round(engine.train_step_s, 3),
            "rows_and_old_logprobs_s": round(seconds - engine.train_step_s, 3),
            "peak_gib": gib(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None,
            **{k: metrics[k] for k in ("ratio_min", "ratio_mean", "ratio_max", "clip_frac", "grad_norm",
                                       "policy_loss", "entropy")}}


def learner_figures(device: str, smoke: bool, responses: int = 4, response_len: int = 4096,
                    gradient_checkpointing: bool = True) -> dict:
    """The first policy step (compiles FlexAttention on CUDA) and a steady one, timed apart; tokens/s
    counts the trained response tokens of the steady step, slots/s every row slot the learner ran
    forward and backward. bf16 compute (autocast over fp32 master weights) on a CPU too. With one
    PPO epoch the old log-probs come from the weights being trained, so the ratios must be exactly
    1 and clip_frac 0: anything else means the old-log-prob pass and the training forward differ
    (precision, kernel, or a nondeterministic kernel)."""
    if device.startswith("cuda") != torch.cuda.is_available():
        raise ValueError(f"device={device!r}: the learner engine runs on CUDA exactly when one is available")
    shape = TINY if smoke else SDAR_1_7B
    length = 64 if smoke else response_len
    block, prompt = 4, 64
    dtype = "bf16"
    torch.manual_seed(0)
    cfg = synthetic_config(block_size=block, max_position_embeddings=prompt + length + 2 * block, **shape)
    with torch.device(device):
        model = DiffusionLM(cfg)
    engine = TimedEngine(TrainEngine(model, EngineConfig(lr=1e-6, dtype=dtype,
                                                         gradient_checkpointing=gradient_checkpointing)))
    budget = prompt + (block + 1) * (length + block)  # one response's packed row per micro-batch
    updater = PolicyUpdater(engine, AlgoConfig(name="tracerl", token_budget=budget), cfg)
    trajs = synthetic(responses, prompt, length, block, cfg.vocab_size, seed=0)
    adv = torch.linspace(-1, 1, responses).tolist()
    first = timed_step(updater, engine, trajs, adv, 0)
    steady = timed_step(updater, engine, trajs, adv, 1)
    tokens = responses * length
    slots = responses * ((prompt + length - 1) // block * block + block * (length + block))  # clean + K copies
    return {
        "first_step": first,
        "steady_step": steady,
        "tokens_per_s": round(tokens / steady["seconds"], 1),
        "slots_per_s_approx": round(slots / steady["seconds"], 1),
        "setup": {"model": "tiny" if smoke else "sdar-1.7b-shaped", "dtype": dtype, "responses": responses,
                  "response_len": length, "block": block, "rounds": block, "layout": "packed",
                  "gradient_checkpointing": gradient_checkpointing,
                  "params_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3)},
    }


def learner_step(setup: Setup) -> dict:
    """The GPU check's learner section."""
    return learner_figures(str(setup.device), setup.smoke)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    emit(learner_figures(a.device, a.smoke))
