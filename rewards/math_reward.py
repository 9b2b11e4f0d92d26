"""Math reward: extract the final answer, then normalised string match, then math_verify."""
from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from .extract import extract_answer, extract_boxed
from .limits import RewardLimits
from .result import RewardResult
from .timeout_pool import TimeoutPool, WorkerCrashed, WorkerUnavailable

_DROP = ("\\!", "\\,", "\\;", "\\:", "\\displaystyle", "$", "\\%", "%", "^\\circ", "^{\\circ}")
# \left( / \right) only size delimiters; \leftarrow and \rightarrow are other commands.
_SIZING = re.compile(r"\\(?:left|right)(?![A-Za-z])")
_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
# Whitespace that is not between two digits: "1 2" must stay apart from "12" ("12 345" as a
# thousands separator is left to math_verify).
_SPACE_NOT_BETWEEN_DIGITS = re.compile(r"(?<!\d) | (?!\d)")


def normalize(answer: str) -> str:
    """Our take on the MATH benchmark's string canonicalisation (the fast path). It only ever
    declares equality, so it must never merge answers that differ in value. It keeps the left side
    of "x=3": "x=3" and "y=3" differ (asymptotes), and math_verify matches "x=3" with "3"."""
    s = answer.strip().rstrip(".")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _SIZING.sub("", s)
    for token in _DROP:
        s = s.replace(token, "")
    s = _TEXT.sub(r"\1", s)
    s = _SPACE_NOT_BETWEEN_DIGITS.sub("", " ".join(s.split()))
    if s.startswith("."):
        s = "0" + s
    return s


CHECKER_MODULES = ("rewards.math_equiv",)  # what each checker worker imports before it is ready
_pools: dict[int, TimeoutPool] = {}
_pools_lock = threading.Lock()


def shared_pool(workers: int) -> TimeoutPool:
    """One pool per size per process: reward functions are cheap to build, workers are not."""
    with _pools_lock:
        if workers not in _pools:
            _pools[workers] = TimeoutPool(workers, preload=CHECKER_MODULES)
        return _pools[workers]


@dataclass(frozen=True)
class MathReward:
    """reward(response, row) for rows with `ground_truth_answer`.

    fallbacks: extractors tried after \\boxed, in order ("answer_tag", "last_number").
    timeout: seconds for one symbolic check; workers: size of the shared checker pool.
    max_answer_chars: longer extracted answers are rejected without parsing."""

    fallbacks: tuple[str, ...] = ()
    timeout: float = 5.0
    workers: int = max(1, min(4, os.cpu_count() or 1))
    max_answer_chars: int = 1000

    def __post_init__(self) -> None:
        object.__setattr__(self, "fallbacks", tuple(self.fallbacks))
        extract_answer("", self.fallbacks)  # validates the names now, not at the first call

    @classmethod
    def limited(cls, limits: RewardLimits, **options: Any) -> MathReward:
        """Bounded by the run's `reward.limits`; explicit options win."""
        return cls(**{"timeout": limits.math_timeout_s, **options})

    def __call__(self, response: str, row: dict[str, Any]) -> dict[str, Any]:
        return self.score(response, row).as_dict()

    def score(self, response: str, row: dict[str, Any]) -> RewardResult:
        if "ground_truth_answer" not in row:
            raise KeyError(f"math reward needs row['ground_truth_answer']; row has {sorted(row)}")
        truth = str(row["ground_truth_answer"])
        truth = extract_boxed(truth) or truth
        start = time.perf_counter()
        answer, source = extract_answer(response, self.fallbacks)
        info: dict[str, Any] = {"answer": answer, "extracted_by": source, "ground_truth": truth}
        if answer is None:
            return RewardResult.failure("no_answer", **info)
        if len(answer) > self.max_answer_chars:
            return RewardResult.failure("answer_too_long", **{**info, "answer": answer[:200] + "..."})
        if normalize(answer) == normalize(truth):
            return RewardResult(1.0, True, {**info, "path": "string_match", "check_s": time.perf_counter() - start})
        try:
            same = shared_pool(self.workers).call("rewards.math_equiv:equivalent", (answer, truth), self.timeout)
        except (TimeoutError, WorkerCrashed, WorkerUnavailable, RuntimeError) as exc:
            # No verdict: an explicit failure the driver counts and never trains on as "wrong".
            return RewardResult.unavailable(_FAILURES.get(type(exc), "checker_error"), **info, error=str(exc),
                                            check_s=time.perf_counter() - start)
        info.update(path="math_verify", check_s=time.perf_counter() - start)
        return RewardResult(float(same), same, info) if same else RewardResult.failure("not_equivalent", **info)


_FAILURES = {TimeoutError: "timeout", WorkerCrashed: "checker_crashed", WorkerUnavailable: "checker_unavailable"}
