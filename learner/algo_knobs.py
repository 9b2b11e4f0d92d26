"""The `algo` config group's knobs, without the objective's name (learner/algo_config.py adds it).

Row builders (learner/objectives/) read these knobs; they live apart from `AlgoConfig` because
`AlgoConfig` validates `algo.name` against the objective registry, which imports the builders."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .advantages import AdvantageConfig


class ValueConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gamma: float = Field(1.0, ge=0.0, le=1.0)
    lam: float = Field(1.0, ge=0.0, le=1.0)
    clip: float = Field(0.2, gt=0.0)  # ε_v of the clipped value loss
    train_every: int = Field(1, ge=1)  # value update every N RL steps
    # The outcome reward on a response's last step in the value recursions: "advantage", its group-
    # normalised Â (upstream's z-scored correctness: mean 0 over every prompt's samples, so with
    # outcome-only rewards nothing in a state predicts it and V stays ≈ 0); "reward", the raw reward,
    # so V learns the expected reward of a state (a prompt's difficulty, the prefix committed so far)
    # and the policy's token advantage is that reward minus V.
    outcome: Literal["advantage", "reward"] = "advantage"
    # The value model's learning rate is engine.lr × lr_scale (same schedule); upstream's recipes
    # train the value model at 5× the policy's rate.
    lr_scale: float = Field(1.0, gt=0.0)


class AlgoKnobs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shrink: int = Field(1, ge=1)  # s: merge every s consecutive steps of a block
    eps_low: float = Field(0.2, ge=0.0)
    eps_high: float = Field(0.2, ge=0.0)
    kl_beta: float = Field(0.0, ge=0.0)
    kl_ref: Literal["old", "frozen"] = "old"  # pre-update policy (the published recipe) or a frozen model
    norm: Literal["token_mean", "seq_mean", "max_len"] = "token_mean"
    # Whose count the normalisation divides by: "sampled", every response the step sampled,
    # the groups the advantage filters dropped included (they teach nothing, but as the policy
    # improves they are most of the batch, and dividing by the few kept tokens would give each of
    # them ever more weight: full-size, ever noisier updates); "kept", only the trained ones.
    norm_over: Literal["sampled", "kept"] = "sampled"
    tis_cap: float | None = Field(None, gt=0.0)  # truncated importance correction toward sampler log-probs
    # Log ref_kl, KL(π_θ ‖ π_ref) to the frozen start of RL (model.ref_path, default the warm start):
    # how far training has moved the policy. Costs a forward of a second model copy per step.
    log_ref_kl: bool = True
    ppo_epochs: int = Field(1, ge=1)  # μ: passes over the step's batch
    temperature: float = 1.0  # the rollout temperature the log-probs are taken at (> 0: _sampled)
    token_budget: int = Field(16384, ge=16)  # padded tokens per micro-batch
    # agrpo
    agrpo_samples: int = Field(4, ge=1)  # M steps drawn per trajectory
    agrpo_sampling: Literal["uniform", "entropy"] = "uniform"
    # diffu_grpo (d1)
    d1_prompt_mask_p: float = Field(0.15, ge=0.0, lt=1.0)
    # coupled_grpo: t ~ U[lo, hi]
    coupled_t: tuple[float, float] = (0.2, 0.8)
    # random_masking and SFT masking: mask ratio ~ U[lo, hi]
    mask_ratio: tuple[float, float] = (0.1, 1.0)
    value: ValueConfig = ValueConfig()
    advantage: AdvantageConfig = AdvantageConfig()

    @field_validator("temperature")
    @classmethod
    def _sampled(cls, t: float) -> float:
        # conf/algo/*.yaml copy rollout.temperature here: name the key a user sets, not only this one.
        if t <= 0:
            raise ValueError("must be > 0: the log-probs are taken at the rollouts' sampling temperature, "
                             "rollout.temperature (conf/algo/*.yaml copy it here); for greedy evaluation set "
                             "trainer.eval_greedy=true instead")
        return t

    @model_validator(mode="after")
    def _check(self) -> "AlgoKnobs":
        for key in ("coupled_t", "mask_ratio"):
            lo, hi = getattr(self, key)
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(f"algo.{key}={(lo, hi)} must satisfy 0 < lo <= hi <= 1")
        return self
