"""Screen a run's rows before the first step: every prompt must be decodable by the model.

A prompt holding the model's mask token would be read as a blank to fill (and trained as one);
a prompt longer than the context leaves no room for the response. The sampler refuses both,
but only when the row is drawn, possibly hours in, naming a position in a shard. Here each such
row is named (split, index, question) up front, and either stops the run or, with
on_error="skip", is left out and counted."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

from .loaders import OnError
from .readers import DatasetError
from .schemas import Row


class PromptError(DatasetError):
    """A row whose prompt the model cannot take."""


@dataclass(frozen=True)
class PromptLimits:
    mask_token_id: int
    max_prompt_tokens: int  # context - rollout.max_new_tokens - rollout.block_size


@dataclass
class ScreenedRows:
    rows: list[Row]
    prompts: list[list[int]]  # rows[i]'s prompt ids
    skipped: list[str] = field(default_factory=list)  # one line per left-out row


def prompt_problem(ids: list[int], limits: PromptLimits) -> str | None:
    if not ids:
        return "its prompt is empty"
    if limits.mask_token_id in ids:
        return (f"its prompt contains the mask token (id {limits.mask_token_id}) at position "
                f"{ids.index(limits.mask_token_id)}")
    if len(ids) > limits.max_prompt_tokens:
        return (f"its prompt has {len(ids)} tokens, more than the {limits.max_prompt_tokens} the model context "
                "leaves beside rollout.max_new_tokens and rollout.block_size")
    return None


def screen_prompts(rows: list[Row], encode: Callable[[Row], list[int]], limits: PromptLimits,
                   on_error: OnError, split: str) -> ScreenedRows:
    """The rows whose prompts fit, with their ids. A bad row raises PromptError naming it, or with
    on_error="skip" is listed in `.skipped` (one warning per split). No good row is an error."""
    out = ScreenedRows([], [])
    for i, row in enumerate(rows):
        ids = encode(row)
        problem = prompt_problem(ids, limits)
        if problem is None:
            out.rows.append(row)
            out.prompts.append(ids)
            continue
        where = f"{split} row {i} (question {str(row.get('question', ''))[:60]!r})"
        if on_error != "skip":
            raise PromptError(f"{where}: {problem}; fix the data or set task.params.on_error=skip")
        out.skipped.append(f"{where}: {problem}")
    if rows and not out.rows:
        raise PromptError(f"no {split} row has a prompt the model can take; first: {out.skipped[0]}")
    if out.skipped:
        warnings.warn(f"skipped {len(out.skipped)} {split} rows; first: {out.skipped[0]}", stacklevel=2)
    return out
