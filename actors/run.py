"""A run's context (`Run`: config, data, the two groups, the metrics logger) and what its loop
changes as it goes (`LoopState`). Built by actors/start.py."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.prompt_stream import PromptStream
from tasks.registry import Task

from .config import RunConfig
from .hooks import RunHooks
from .learner_group import LearnerGroup
from .metrics import MetricsLogger
from .placement import Placements
from .rollout_group import RolloutGroup

PROMPT_STREAM = "prompt_stream"  # driver.json's key for the prompt stream's cursor
OLD_PROMPT_STREAM = "sampler"  # the same, as checkpoints before the rename wrote it


@dataclass
class LoopState:
    """What the training loop changes as it goes (checkpointed, rolled back on recovery)."""
    step: int = 0
    needs_warmup: bool = False  # no cached warm start yet: the learners start in the warm-up phase
    start_state: dict[str, Any] | None = None  # driver state when training began (restored if no checkpoint yet)
    best: dict[str, float] | None = None  # {"step", "accuracy"} of the best held-out evaluation so far


@dataclass(frozen=True)
class Run:
    cfg: RunConfig
    run_dir: Path
    task: Task
    tokenizer: Any
    metrics: MetricsLogger
    rollout: RolloutGroup
    learner: LearnerGroup | None  # None when only evaluating
    places: Placements  # every pool's placement group
    prompts: PromptStream | None = None  # training rows, the stream checkpoints record
    supervised: PromptStream | None = None  # rows of supervised steps: mode=sft's, or the warm-up's
    warm_dir: Path | None = None  # where this run's SFT warm start is (or will be) cached
    hooks: RunHooks = field(default_factory=RunHooks)
    state: LoopState = field(default_factory=LoopState)

    def next_pairs(self, n: int) -> list[tuple[list[int], list[int], str]]:
        """(prompt ids, reference solution ids + EOS, the prompt's image or "") for supervised steps;
        a multiple-choice row's reference is its option letter."""
        pairs = []
        for s in self.supervised.next_batch(n):
            if not (s.row.get("solution") or s.row.get("ground_truth_answer")):
                raise ValueError(
                    f"supervised steps need rows with 'solution' or 'ground_truth_answer'; got {sorted(s.row)}"
                )
            answer = s.row.get("ground_truth_answer")
            text = s.row.get("solution") or (str(answer) if self.task.kind == "choice" else f"\\boxed{{{answer}}}")
            ids = self.tokenizer.encode(text, add_special_tokens=False) + [self.tokenizer.eos_token_id]
            pairs.append((self.rollout.encode(s.row), ids, s.row.get("image") or ""))
        return pairs

    def driver_state(self) -> dict[str, Any]:
        return {
            "step": self.state.step,
            "version": self.learner.version,
            PROMPT_STREAM: self.rollout.cursor() or self.prompts.state_dict(),
            "best": self.state.best,
            "config": self.cfg.model_dump(mode="json", by_alias=True),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Go back to a saved driver state (the learners hold its weights): data cursor, version,
        no rollout in flight, rollout workers to be re-synced, later metrics forgotten."""
        self.state.step, self.learner.version = state["step"], state["version"]
        self.state.best = state.get("best")  # checkpoints from before keep_best have none
        self.learner.forget_weights()
        self.rollout.forget()
        self.prompts.load_state_dict(prompt_cursor(state))
        self.metrics.rewind(self.state.step)

    def close(self) -> None:
        """Flush the metrics and release every actor (the caller owns the Ray connection)."""
        self.metrics.close(plot=self.cfg.trainer.plot)
        if self.learner is not None:
            self.learner.shutdown()
        self.rollout.shutdown()
        self.places.remove()


def prompt_cursor(state: dict[str, Any]) -> dict[str, Any]:
    """The prompt stream's cursor in a driver state, whichever name the checkpoint used."""
    return state[PROMPT_STREAM] if PROMPT_STREAM in state else state[OLD_PROMPT_STREAM]
