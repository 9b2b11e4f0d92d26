"""Points of a training run where a bench or a test may act: bench/chaos.py kills actors at them and
accounts every step's prompts. The run calls each one where its docstring says; `RunHooks` itself
does nothing, a subclass overrides what it needs and is passed to `actors.driver.run_to_end`."""
from __future__ import annotations

from rewards.result import Score
from rollout.requests import PromptRecord
from rollout.trajectory_batch import RowMeta


class RunHooks:
    def step_started(self, step: int) -> None:
        """Before training step `step` (1-based) begins, each time it is run (a replay runs it again)."""

    def rollout_submitted(self) -> None:
        """A training rollout's shards were just handed to the rollout workers."""

    def rollout_collected(self, records: list[PromptRecord], rows: list[RowMeta],
                          scores: dict[tuple[str, int], Score], reissued: int) -> None:
        """A training rollout came back: what was asked, what returned, how it scored, and how many
        calls were re-issued after their actor died."""

    def shard_returned(self, rows: list[RowMeta]) -> None:
        """A rollout shard came back; its rows go to the scorers next."""

    def update_starting(self) -> None:
        """The learner ranks are about to be handed an update."""

    def weights_publishing(self) -> None:
        """The learners are about to publish a new version to the rollout workers."""
