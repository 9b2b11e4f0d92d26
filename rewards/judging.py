"""Score responses' chunks with a judge (what a judge worker runs) or with a rule (what a reward
worker runs for a rule process reward).

Every response's judge prompts (its outcome prompt and one per chunk prefix) go to the backend in
one batched call; verdicts come back per response as a ProcessScore. Ids are chunked, text is only
decoded to show the judge or the rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .bounded import bounded_map
from .judge_backends import JudgeBackend
from .judge_prompts import JudgePromptConfig, Verdict, parse_verdict
from .process import ProcessFn, ProcessScore, prefixes, rule_scores


@dataclass
class JudgeRequest:
    """One response to score."""
    prompt_uid: str
    sample_idx: int
    response_ids: list[int]
    row: dict


def _question(row: dict) -> str:
    return str(row.get("question", row.get("prompt", "")))


def judge_responses(backend: JudgeBackend, prompts: JudgePromptConfig, decode: Callable[[list[int]], str],
                    requests: list[JudgeRequest], outcome: bool, chunk_tokens: int | None) -> list[ProcessScore]:
    """Outcome verdicts (when `outcome`) and per-chunk process verdicts (when `chunk_tokens`)."""
    texts: list[str] = []
    owners: list[tuple[int, int | None]] = []  # (request, chunk index or None for the outcome prompt)
    for n, r in enumerate(requests):
        q = _question(r.row)
        if outcome:
            texts.append(prompts.outcome_prompt(q, decode(r.response_ids), str(r.row.get("ground_truth_answer", ""))))
            owners.append((n, None))
        if chunk_tokens:
            for k, p in enumerate(prompts.process_prompts(q, prefixes(decode, r.response_ids, chunk_tokens))):
                texts.append(p)
                owners.append((n, k))
    outputs = _generate(backend, texts)
    out = [ProcessScore(r.prompt_uid, r.sample_idx, []) for r in requests]
    for (n, k), raw in zip(owners, outputs):
        v = raw if isinstance(raw, Verdict) else parse_verdict(
            raw, prompts.outcome_scale if k is None else prompts.process_scale)
        s = out[n]
        if k is None:
            s.outcome, s.outcome_failure = v.score, (v.reason or None)
            s.info["outcome_raw"] = v.raw
        else:
            s.scores.append(v.score)
            if not v.ok:
                s.failures.append(v.reason)
    return out


def _generate(backend: JudgeBackend, texts: list[str]) -> list[str | Verdict]:
    """The judge's outputs; a backend error fails every verdict with its reason instead of raising
    (a judge that cannot answer must not cost the RL step; the failures show in the metrics)."""
    if not texts:
        return []
    try:
        outputs = backend.generate(texts)
        if len(outputs) != len(texts):
            raise ValueError(f"{len(outputs)} outputs for {len(texts)} prompts")
        return list(outputs)
    except Exception as exc:  # noqa: BLE001 - reported per verdict
        return [Verdict.failed(f"judge_error: {type(exc).__name__}: {exc}"[:300], "") for _ in texts]


def rule_responses(fn: ProcessFn, decode: Callable[[list[int]], str], requests: list[JudgeRequest],
                   chunk_tokens: int, concurrency: int = 4, timeout: float | None = None) -> list[ProcessScore]:
    """A rule's per-chunk scores for each response, `concurrency` responses at a time; a response
    whose rule runs past `timeout` seconds scores 0 on every chunk with the reason."""
    texts = [prefixes(decode, r.response_ids, chunk_tokens) for r in requests]

    def score(i: int) -> ProcessScore:
        r = requests[i]
        return ProcessScore(r.prompt_uid, r.sample_idx, *rule_scores(fn, texts[i], r.row))

    def timed_out(i: int) -> ProcessScore:
        r, n = requests[i], len(texts[i])
        return ProcessScore(r.prompt_uid, r.sample_idx, [0.0] * n, [f"timeout: the rule ran over {timeout} s"] * n)

    return bounded_map(score, len(requests), concurrency, timeout, timed_out)
