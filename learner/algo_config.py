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
