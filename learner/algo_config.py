"""The `algo` config group: which objective and its knobs (validated; crosses into learner actors)."""
from __future__ import annotations

from typing import Literal

from .algo_knobs import AlgoKnobs, ValueConfig
from .objectives import OBJECTIVES, Objective

# The registry's names: a bad algo.name is rejected naming every allowed value.
AlgoName = Literal[tuple(OBJECTIVES)]  # type: ignore[valid-type]

__all__ = ["AlgoConfig", "AlgoName", "SFT_KNOBS", "ValueConfig"]

# What a reference-SFT objective (sft_semi_ar, sft_random_masking) and the SFT update read of the
# config: a cached SFT warm start depends on these alone (actors/modes.py hashes them), so a new RL
# knob leaves every cached warm start valid.
SFT_KNOBS = frozenset({"name", "mask_ratio", "norm", "token_budget"})


class AlgoConfig(AlgoKnobs):
    name: AlgoName = "tracerl"

    @property
    def objective(self) -> Objective:
        return OBJECTIVES[self.name]

    @property
    def uses_value(self) -> bool:
        return self.objective.uses_value

    @property
    def needs_frozen_ref(self) -> bool:
        """Whether the learner holds a frozen reference model (for the KL term or the ref_kl metric)."""
        on_rollouts = self.objective.supervised_on is None
        return (self.kl_beta > 0 and self.kl_ref == "frozen") or (self.log_ref_kl and on_rollouts)
