"""Judge prompts (configurable templates) and the verdict parser.

Outcome template fields: {question}, {response}, {reference} (the row's ground truth, "" if none).
Process template fields: {question}, {previous} (the response before this chunk), {step} (the chunk).
`scale` is the verdict's top value: 1 for yes/no-style judgements, 10 for "score 0-10".

`parse_verdict` accepts what common judge models write — `\\boxed{7}`, `<score>7</score>`,
"Yes"/"No", a bare number ("7", "7/10", "Score: 7") — after dropping a closed <think> block, and
maps everything else to a failed verdict (score 0) whose reason says what was wrong.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from .extract import extract_boxed

OUTCOME_TEMPLATE = (
    "You are grading a solution.\n\nProblem:\n{question}\n\nReference answer:\n{reference}\n\n"
    "Solution:\n{response}\n\nIs the solution's final answer correct? Rate it from 0 (wrong) to 10 "
    "(fully correct) and put only the number in \\boxed{{}}.")
PROCESS_TEMPLATE = (
    "You are checking a solution one step at a time.\n\nProblem:\n{question}\n\n"
    "Steps so far:\n{previous}\n\nNew step:\n{step}\n\nIs the new step correct? "
    "Answer \\boxed{{1}} for correct or \\boxed{{0}} for incorrect.")


class JudgePromptConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcome_template: str = OUTCOME_TEMPLATE
    outcome_scale: int = Field(10, ge=1)
    process_template: str = PROCESS_TEMPLATE
    process_scale: int = Field(1, ge=1)

    def outcome_prompt(self, question: str, response: str, reference: str = "") -> str:
        return self.outcome_template.format(question=question, response=response, reference=reference)

    def process_prompts(self, question: str, prefix_texts: list[str]) -> list[str]:
        """One prompt per chunk: the text before it and the chunk itself (prefixes are cumulative)."""
        out, before = [], ""
        for text in prefix_texts:
            # Decoded prefixes share their beginning; a chunk ending inside a multi-byte character
            # may decode differently later, so fall back to showing the whole prefix as the step.
            step = text[len(before):] if text.startswith(before) else text
            out.append(self.process_template.format(question=question, previous=before or "(none)", step=step))
            before = text
        return out


@dataclass(frozen=True)
class Verdict:
    score: float  # in [0, 1]; 0 when the judgement failed
    ok: bool
    reason: str = ""  # why it failed ("" when ok)
    raw: str = ""  # the judge's output, truncated, for the logs

    @classmethod
    def failed(cls, reason: str, raw: str) -> "Verdict":
        return cls(0.0, False, reason, raw[-300:])


# Tags are found one by one and paired in a single pass: a lazy `<tag>.*?</tag>` regex rescans the
# rest of the text from every unclosed tag, quadratic on a judge that repeats one.
_THINK_TAG = re.compile(r"<(/?)think>", re.I)
_SCORE_TAG = re.compile(r"<(/?)score>", re.I)
_MAX_TOKEN = 64  # longest verdict read as a number ("Final score: 10/10."); bounds the regex's work
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_BARE = re.compile(rf"^(?:(?:final\s+)?(?:score|rating|verdict|grade)\s*[:=]?\s*)?({_NUMBER})\s*(?:/\s*(\d+))?\s*\.?$",
                   re.I)
_YES = {"yes", "correct", "true", "right"}
_NO = {"no", "incorrect", "false", "wrong"}


def _value(token: str, scale: int, raw: str) -> Verdict:
    """A verdict token (from a box, a tag or the bare text) on the 0..scale range."""
    t = token.strip().strip("*").strip().rstrip(".").strip()
    word = t.lower()
    if word in _YES:
        return Verdict(1.0, True, raw=raw[-300:])
    if word in _NO:
        return Verdict(0.0, True, raw=raw[-300:])
    m = _BARE.match(t) if len(t) <= _MAX_TOKEN else None
    if not m:
        return Verdict.failed("not_a_number", raw)
    x = float(m.group(1))
    top = float(m.group(2)) if m.group(2) else float(scale)
    if top <= 0 or not 0.0 <= x <= top:
        return Verdict.failed("out_of_range", raw)
    return Verdict(x / top, True, raw=raw[-300:])


def _drop_thinking(text: str) -> str | None:
    """The text without its closed <think>...</think> blocks; None when a block is left open."""
    kept, start, inside = [], 0, False
    for m in _THINK_TAG.finditer(text):
        closing = bool(m.group(1))
        if not inside and not closing:
            kept.append(text[start:m.start()])
            inside = True
        elif inside and closing:
            start, inside = m.end(), False
    if inside:
        return None
    kept.append(text[start:])
    return "".join(kept)


def _score_tags(text: str) -> list[str]:
    """The contents of every <score>...</score>: each opening tag with the next closing one."""
    out, opened = [], None
    for m in _SCORE_TAG.finditer(text):
        if not m.group(1):
            opened = m.end() if opened is None else opened
        elif opened is not None:
            out.append(text[opened:m.start()].strip())
            opened = None
    return out


_LEADING_YES_NO = re.compile(r"\W*(yes|no)\b(?:\s*[.,;:!]|\W*$)", re.I)


def _yes_no(body: str, raw: str) -> Verdict:
    """A short answer that says yes or no: read only when it opens with a bare "Yes"/"No" that
    nothing after it takes back ("Not yes", "Yes? Not sure", "Yes, 3/10", "No errors" are ambiguous)."""
    m = _LEADING_YES_NO.match(body)
    rest = set(re.findall(r"[a-z]+", body[m.end():].lower())) if m else set()
    # A "yes" is taken back by any negation, a "no" only by a "yes": a false "correct" costs more.
    against = {"no", "not", *_NO} if m and m.group(1).lower() == "yes" else {"yes"}
    if not m or rest & against or any(c.isdigit() for c in body):
        return Verdict.failed("ambiguous", raw)
    return Verdict(1.0 if m.group(1).lower() == "yes" else 0.0, True, raw=raw[-300:])


def parse_verdict(text: str, scale: int) -> Verdict:
    """A judge's output → a verdict in [0, 1]; never raises."""
    if not isinstance(text, str) or not text.strip():
        return Verdict.failed("empty", text if isinstance(text, str) else "")
    body = _drop_thinking(text)
    if body is None:
        return Verdict.failed("unfinished_thinking", text)
    body = body.strip()
    if "\\boxed" in body:
        boxed = extract_boxed(body)
        return _value(boxed, scale, text) if boxed is not None else Verdict.failed("unclosed_box", text)
    tags = _score_tags(body)
    if tags:
        return _value(tags[-1], scale, text)
    if len(body) <= 40 and re.search(r"\b(?:yes|no)\b", body, re.I):  # a short "Yes." / "No, ..." answer
        return _yes_no(body, text)
    verdict = _value(body, scale, text)
    return Verdict.failed("no_verdict", text) if verdict.reason == "not_a_number" else verdict
