"""The `algo` config group: which objective and its knobs (validated; crosses into learner actors)."""
from __future__ import annotations

from typing import Literal

from .algo_knobs import AlgoKnobs, ValueConfig
from .objectives import OBJECTIVES, Objective

# The registry's names: a bad algo.name is rejected naming every allowed value.
AlgoName = Literal[tuple(OBJECTIVES)]  # type: ignore[valid-type]

__all__ = ["AlgoConfig", "AlgoName", "ValueConfig"]


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
