"""What the GPU check's sections share: the run's setup (device, dtype, shapes), the exception a
section raises to say it does not apply, device timing and memory helpers, and the sharpened
random model that makes token-for-token comparisons meaningful.

Plain torch only: bench/gpu_check.py imports this before any project package, so a package the GPU
image lacks (pydantic, deepspeed) fails the sections that need it, not the whole check."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

# Exactness checks: the real vocabulary (the inverse CDF's chunking) on a small body.
EXACT_SHAPE = dict(hidden_size=512, intermediate_size=1536, num_layers=4, num_heads=8, num_kv_heads=4, head_dim=64,
                   vocab_size=151936)
SMOKE_SHAPE = dict(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                   vocab_size=512)
BLOCK, STEPS = 4, 4  # B and K of every decode the check runs


class SectionSkipped(Exception):
    """A section that does not apply here (no CUDA, a package missing): its line says why."""


@dataclass(frozen=True)
class Setup:
    device: torch.device
    dtype: torch.dtype             # throughput runs (bf16 on a GPU, fp32 on a CPU)
    smoke: bool                    # CPU, tiny shapes: checks the script itself
    batch: int                     # rows decoded together
    prompt: int                    # prompt tokens (whole blocks)
    new: int                       # response tokens per row
    shape_names: tuple[str, ...]   # eager throughput shapes (bench/shapes.py); the last is the target
    exact_shape: dict[str, int]    # fp32 exactness checks

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def target_shape(self) -> str:
        """The shape the targets name (SDAR-4B): memory sizing and CUDA-graph throughput use it too."""
        return self.shape_names[-1]

    def shape(self, name: str) -> dict[str, int]:
        if self.smoke:
            return SMOKE_SHAPE
        from bench.shapes import SHAPES  # imports the models package: only inside the sections that need it

        return SHAPES[name]


def setup_for(smoke: bool, batch: int, prompt: int, new: int) -> Setup:
    if smoke:
        return Setup(torch.device("cpu"), torch.float32, True, 6, 8, 8, ("tiny_a", "tiny_b"), SMOKE_SHAPE)
    return Setup(torch.device("cuda"), torch.bfloat16, False, batch, prompt, new, ("sdar_1_7b", "sdar_4b"),
                 EXACT_SHAPE)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gib(n: int | float) -> float:
    return round(n / 2**30, 3)


def sharpen(model: nn.Module, logit_std: float = 10.0) -> None:
    """Scale the final norm so the logits of N(0, 0.02) weights have std ~logit_std instead of
    ~0.02 * sqrt(hidden): the top token then holds most of the mass and confidences are far apart,
    so a last-bit change of a logit (fp32 kernels that reduce in another order at another shape)
    cannot flip a draw or a commit order, and any token that differs is a real bug. The final
    norm, not lm_head: lm_head may be tied to the input embedding."""
    hidden = model.config.hidden_size
    with torch.no_grad():
        model.norm.weight.mul_(logit_std / (0.02 * math.sqrt(hidden)))


def token_diff(a: list[list[int]], b: list[list[int]]) -> int:
    """Positions where two runs' responses differ (a length difference counts every missing token)."""
    return sum(sum(x != y for x, y in zip(r, s)) + abs(len(r) - len(s)) for r, s in zip(a, b))


def max_abs_diff(a: list[list[float]], b: list[list[float]]) -> float:
    """Largest |a - b| over positions both runs have."""
    return max((abs(x - y) for r, s in zip(a, b) for x, y in zip(r, s)), default=0.0)
