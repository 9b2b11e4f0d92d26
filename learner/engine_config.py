"""Validated settings of the training engine (docs/design.md §6.4)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class EngineConfig(BaseModel):
    """Optimizer, schedule, precision and parallelism of one learner group.

    dtype: the compute precision; the weights stay fp32 master weights either way (TrainEngine).
    "bf16" runs on CPU too (slowly: tests use it to imitate a GPU learner).
    zero_stage / offload_*: DeepSpeed only; with backend="torch" they must stay at their defaults.
    """
    model_config = ConfigDict(extra="forbid")

    backend: Literal["deepspeed", "torch"] = "torch"
    zero_stage: Literal[0, 1, 2, 3] = 0
    offload_optimizer: bool = False
    offload_params: bool = False
    gradient_checkpointing: bool = False
    dtype: Literal["fp32", "bf16"] = "fp32"

    grad_clip: float = Field(1.0, ge=0.0, description="max global grad norm; 0 = no clipping")
    lr: float = Field(1e-6, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)

    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    total_steps: int | None = Field(None, ge=0, description="cosine: step at which lr = min_lr_ratio * lr")
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_combinations(self) -> EngineConfig:
        if self.backend == "torch":
            for key, default in (("zero_stage", 0), ("offload_optimizer", False), ("offload_params", False)):
                if getattr(self, key) != default:
                    raise ValueError(f"engine.{key}={getattr(self, key)!r} needs engine.backend=deepspeed")
        if self.backend == "deepspeed" and self.dtype == "bf16" and self.zero_stage == 0:
            raise ValueError("engine.dtype=bf16 with engine.backend=deepspeed needs engine.zero_stage in [1, 2, 3]: "
                             "DeepSpeed's stage 0 accumulates bf16 gradients in bf16 (use engine.backend=torch "
                             "for bf16 compute without ZeRO)")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("engine.offload_optimizer=true needs engine.zero_stage in [1, 2, 3]")
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("engine.offload_params=true needs engine.zero_stage=3")
        if self.schedule == "cosine" and self.total_steps is None:
            raise ValueError("engine.schedule=cosine needs engine.total_steps (the step at which lr reaches "
                             "min_lr_ratio * lr; conf/config.yaml sets it to trainer.steps)")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"engine.betas={self.betas}: each must be in [0, 1)")
        return self
