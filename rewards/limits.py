"""The built-in rewards' bounds, as the run config sets them (`reward.limits`, docs/design.md §7).

A custom reward function gets none of these: it is bounded by `reward.timeout_s` per response,
like every scorer in the reward workers."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RewardLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    math_timeout_s: float = Field(5.0, gt=0.0)  # one symbolic equivalence check (math_verify) in the checker pool
    sandbox_memory_mb: int = Field(1024, ge=64)  # address space of a sandboxed program
    sandbox_startup_s: float = Field(5.0, gt=0.0)  # sandbox start-up, before the program's own clock runs
    test_time_limit_s: float = Field(1.0, gt=0.0)  # per code test, when its row has no test_time_limit
