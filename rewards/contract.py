"""What every scorer is asked and what it answers, whichever scores (docs/design.md §7): a reward
worker's rules (the outcome reward, a rule process reward) and a judge worker's model alike.

A scorer is asked for some `ScoreParts` of a chunk of responses — `score(batch, which, task_rows,
parts)`: the batch's rows `which`, with their task rows — and answers one `ResponseScore` per
response, in order: the outcome verdict (`Score`) when the outcome was asked for, the per-chunk
process scores (`ProcessScore`) when the process reward was.
"""
from __future__ import annotations

from dataclasses import dataclass

from .process import ProcessScore
from .result import Score


@dataclass(frozen=True)
class ScoreParts:
    outcome: bool = False  # the response's reward and verdict
    process: bool = False  # a score per chunk of the response's tokens

    def __bool__(self) -> bool:
        return self.outcome or self.process


@dataclass(frozen=True)
class ResponseScore:
    prompt_uid: str
    sample_idx: int
    outcome: Score | None = None
    process: ProcessScore | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.prompt_uid, self.sample_idx
