"""Process rewards: chunk a response by token ids, and place each chunk's score on a decoding step.

A response of L tokens is cut every `chunk_tokens` token ids (the last chunk ends at the response
end); a judge or a rule scores every prefix that ends at a chunk end. Chunk k's score is placed on
the tokens committed at the last decoding step inside the block that holds the chunk's last token;
the final chunk's score goes to the response's last step. This is where the decoding trace says
the chunk was complete, so the value model's step recursions (docs/design.md §6.2) credit the states that
wrote it. Scores of chunks that land on the same step add up (a chunk shorter than a block).

Pure python on token ids and step maps: text is decoded only to show a prefix to a judge, never
re-tokenised.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from .registry import describe_error, load_function

# A rule scores every prefix of one response at once: fn(prefixes, row) -> one score per prefix.
ProcessFn = Callable[[list[str], dict], list[float]]


def chunk_ends(response_len: int, chunk_tokens: int) -> list[int]:
    """Exclusive end index of each chunk; a response shorter than one chunk is one chunk."""
    if chunk_tokens < 1:
        raise ValueError(f"reward.chunk_tokens must be >= 1, got {chunk_tokens}")
    if response_len < 1:
        return []
    return list(range(chunk_tokens, response_len, chunk_tokens)) + [response_len]


def chunk_steps(step_map: list[int], ends: list[int], block_size: int, block_offset: int) -> list[int]:
    """The decoding step each chunk's score lands on.

    `block_offset` is response token 0's position for block numbering: block-causal models align
    blocks to absolute positions (pass the prompt length), full-attention models split the
    generation canvas into blocks from the response start (pass 0). Only response tokens count:
    tokens the sampler committed after EOS in the last block have no reward slot.
    """
    if not ends:
        return []
    block_last: dict[int, int] = {}
    for j, s in enumerate(step_map):
        b = (block_offset + j) // block_size
        block_last[b] = max(block_last.get(b, s), s)
    steps = [block_last[(block_offset + end - 1) // block_size] for end in ends[:-1]]
    return steps + [max(step_map)]


def place_scores(step_map: list[int], steps: list[int], scores: list[float]) -> list[float]:
    """Per-token reward vector: every token committed at a chunk's step carries that chunk's score
    (so the step's mean reward, which the value recursions use, is the score)."""
    if len(steps) != len(scores):
        raise ValueError(f"{len(scores)} scores for {len(steps)} chunks")
    at_step: dict[int, float] = {}
    for s, x in zip(steps, scores):
        at_step[s] = at_step.get(s, 0.0) + float(x)
    return [at_step.get(s, 0.0) for s in step_map]


def process_vector(step_map: list[int], prompt_len: int, block_size: int, full_attention: bool,
                   chunk_tokens: int, scores: list[float]) -> list[float]:
    """Chunk, find each chunk's step and place its score: the per-token process reward."""
    ends = chunk_ends(len(step_map), chunk_tokens)
    steps = chunk_steps(step_map, ends, block_size, 0 if full_attention else prompt_len)
    return place_scores(step_map, steps, scores)


def prefixes(decode: Callable[[list[int]], str], response_ids: list[int], chunk_tokens: int) -> list[str]:
    """The decoded text of every prefix that ends at a chunk end (ids are cut, text only shown)."""
    return [decode(response_ids[:end]) for end in chunk_ends(len(response_ids), chunk_tokens)]


@dataclass
class ProcessScore:
    """One response's chunk scores; a failed judgement scores 0 and says why in `failures`."""
    prompt_uid: str
    sample_idx: int
    scores: list[float]
    failures: list[str] = field(default_factory=list)  # reasons, one per failed chunk
    outcome: float | None = None  # an outcome judge's reward (None: the rule reward stands)
    outcome_failure: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


def get_process_fn(path: str) -> ProcessFn:
    """A rule as "package.module:function" (e.g. tasks.builtin.arith:process_reward)."""
    if ":" not in path:
        raise ValueError(f"reward.process={path!r}: use 'judge' or 'package.module:function'")
    return load_function(path, "process reward")


def rule_scores(fn: ProcessFn, texts: list[str], row: dict) -> tuple[list[float], list[str]]:
    """A rule's scores for one response's prefixes; a crash or a wrong count scores every chunk 0
    with the reason, never the step's loss."""
    try:
        scores = [float(x) for x in fn(texts, copy.deepcopy(row))]  # a rule that edits its row edits its own
        if len(scores) != len(texts):
            raise ValueError(f"returned {len(scores)} scores for {len(texts)} prefixes")
        if not all(math.isfinite(x) for x in scores):  # NaN would reach the advantages or the value model
            raise ValueError(f"returned a non-finite score: {next(x for x in scores if not math.isfinite(x))}")
        return scores, []
    # BaseException too: a SystemExit would end the thread without an answer, read as a timeout.
    except BaseException as exc:  # noqa: BLE001 - one response's failure is reported, not raised
        return [0.0] * len(texts), [f"rule_error: {describe_error(exc)}"] * len(texts)
