"""The objective registry: one module per objective declares its rows and what it needs
(learner/objectives/common.py `Objective`). This is the only place that maps names to behaviour;
adding an objective is one module plus one line here (docs/adding.md)."""
from __future__ import annotations

from . import (
               agrpo,
               coupled_grpo,
               diffu_grpo,
               random_masking,
               sft_random_masking,
               sft_semi_ar,
               sft_trace,
               tracerl,
               tracerl_value,
)
from .common import Objective, sft_trajectory

OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    tracerl.OBJECTIVE, tracerl_value.OBJECTIVE, agrpo.OBJECTIVE, diffu_grpo.OBJECTIVE, coupled_grpo.OBJECTIVE,
    random_masking.OBJECTIVE, sft_semi_ar.OBJECTIVE, sft_random_masking.OBJECTIVE, sft_trace.OBJECTIVE)}

REFERENCE_SFT = tuple(n for n, o in OBJECTIVES.items() if o.supervised_on == "references")

__all__ = ["OBJECTIVES", "Objective", "REFERENCE_SFT", "sft_trajectory"]
