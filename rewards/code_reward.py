"""Code reward: run the response's last fenced program against the row's tests in the sandbox.

Rows use the reference format: test_method "function" (test_list of assert statements, optional
prefix prepended to the program) or "stdio" (test_input / test_output lists of strings), and
test_time_limit seconds per test. Function tests run in one sandbox, one assert after another;
a test that hangs or kills the process fails alone and the rest resume in a fresh sandbox. An
assert's comparison is made here, on the plain values the sandbox computed (asserts.py), so no
object of the program decides it. Each stdio input gets its own sandbox; expected outputs never
enter it.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from .asserts import TestPlan, plan_test
from .extract import extract_code
from .limits import RewardLimits
from .result import RewardResult
from .sandbox import Event, Limits, RunResult, Sandbox, SandboxUnavailable

_EXIT_GRACE_S = 1.0
_sandboxes: dict[str, Sandbox] = {}
_sandboxes_lock = threading.Lock()


def shared_sandbox(backend: str = "auto") -> Sandbox:
    with _sandboxes_lock:
        if backend not in _sandboxes:
            _sandboxes[backend] = Sandbox(backend)
        return _sandboxes[backend]


def normalize_output(text: str) -> list[str]:
    """Whitespace-insensitive view of program output: lines with runs of blanks collapsed."""
    return [" ".join(line.split()) for line in text.strip().splitlines()]


def _required(row: dict[str, Any], name: str) -> Any:
    if name not in row:
        raise KeyError(f"code reward with test_method={row.get('test_method')!r} needs row[{name!r}]")
    return row[name]


class _Watcher:
    """Verifies the harness's signed events and derives the run's deadline from them."""

    def __init__(self, key: bytes, startup_s: float, time_limit: float) -> None:
        self.key, self.startup_s, self.time_limit = key, startup_s, time_limit
        self.started = time.monotonic()
        self.verified: list[tuple[float, list[bytes]]] = []
        self._seen = 0

    def _verify(self, events: list[Event]) -> None:
        for arrival, line in events[self._seen :]:
            message, _, tag = line.rpartition(b" ")
            expected = hashlib.blake2b(message, key=self.key, digest_size=16).hexdigest().encode()
            if hmac.compare_digest(tag, expected):
                self.verified.append((arrival, message.split(b" ", 4)))
        self._seen = len(events)

    def deadline(self, events: list[Event]) -> float:
        self._verify(events)
        # A test's time runs from its start: the values it sends do not extend it.
        latest = next((event for event in reversed(self.verified) if event[1][0] != b"value"), None)
        if latest is None:
            return self.started + self.startup_s
        arrival, words = latest
        return arrival + (_EXIT_GRACE_S if words[0] in (b"done", b"load_error") else self.time_limit)


def _failure_reason(run: RunResult) -> str:
    if run.killed:
        return run.killed
    return f"exited with code {run.returncode}"


@dataclass(frozen=True)
class CodeReward:
    """reward(response, row) for code rows.

    score: "fraction" of tests passed, or "count". language: fence tag of the program block
    (None: last fenced block of any language). startup_s: time allowed for the sandbox to start
    before the program's own clock runs. limits: sandbox limits (cpu_s is set per run)."""

    score: str = "fraction"
    language: str | None = "python"
    default_time_limit: float = 1.0
    startup_s: float = 5.0
    limits: Limits = field(default_factory=Limits)
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.score not in ("fraction", "count"):
            raise ValueError(f"score must be 'fraction' or 'count', not {self.score!r}")

    @classmethod
    def limited(cls, limits: RewardLimits, **options: Any) -> CodeReward:
        """Bounded by the run's `reward.limits`; explicit options win."""
        bounds = {"limits": Limits(memory_mb=limits.sandbox_memory_mb), "startup_s": limits.sandbox_startup_s,
                  "default_time_limit": limits.test_time_limit_s}
        return cls(**{**bounds, **options})

    def __call__(self, response: str, row: dict[str, Any]) -> dict[str, Any]:
        return self.evaluate(response, row).as_dict()

    def evaluate(self, response: str, row: dict[str, Any]) -> RewardResult:
        method = row.get("test_method")
        if method not in ("function", "stdio"):
            raise ValueError(f"row['test_method'] must be 'function' or 'stdio', got {method!r}")
        time_limit = float(row.get("test_time_limit") or self.default_time_limit)
        if not 0 < time_limit < math.inf:  # a negative one failed every test as a timeout: a wrong "wrong"
            raise ValueError(f"row['test_time_limit'] must be a positive number of seconds, "
                             f"got {row.get('test_time_limit')!r}")
        if method == "function":
            tests = [plan_test(str(test)) for test in _required(row, "test_list")]
        else:
            inputs, outputs = list(_required(row, "test_input")), list(_required(row, "test_output"))
            if len(inputs) != len(outputs):
                raise ValueError(f"row has {len(inputs)} test_input but {len(outputs)} test_output")
        program = extract_code(response, self.language)
        if program is None:
            return RewardResult.failure("no_code_block")
        start = time.perf_counter()
        try:
            if method == "function":
                prefix = row.get("prefix") or ""
                results = self._function_tests(f"{prefix}\n{program}" if prefix else program, tests, time_limit)
            else:
                results = [self._stdio_test(program, i, o, time_limit) for i, o in zip(inputs, outputs, strict=True)]
        except SandboxUnavailable as exc:  # issue 15: no verdict, never a confident "tests failed"
            return RewardResult.unavailable("sandbox_unavailable", error=str(exc)[:500])
        passed = sum(r["passed"] for r in results)
        total = len(results)
        reward = passed if self.score == "count" else (passed / total if total else 0.0)
        info = {"passed": passed, "total": total, "tests": results, "wall_s": time.perf_counter() - start}
        correct = total > 0 and passed == total
        if not correct:
            info["reason"] = "no_tests" if not total else "tests_failed"
        return RewardResult(float(reward), correct, info)

    def _run(self, request: dict, stdin: bytes, time_limit: float, n_slots: int) -> tuple[RunResult, _Watcher]:
        key = secrets.token_bytes(32)
        watcher = _Watcher(key, self.startup_s, time_limit)
        limits = replace(self.limits, cpu_s=math.ceil(time_limit * n_slots) + 1)
        run = shared_sandbox(self.backend).run(
            dict(request, key=key.hex()), stdin, limits, watcher.deadline,
            timeout=self.startup_s + time_limit * n_slots + 2 * _EXIT_GRACE_S)
        watcher.deadline(run.events)  # verify the events that arrived last
        if not any(words[0] == b"ready" for _, words in watcher.verified):
            # "ready" is signed before the program runs: without it the sandbox failed, not the program.
            raise SandboxUnavailable(f"the sandbox did not start ({_failure_reason(run)}): "
                                     f"{run.stderr.decode(errors='replace')[-300:]}")
        return run, watcher

    def _stdio_test(self, program: str, test_input: str, expected: str, time_limit: float) -> dict[str, Any]:
        run, _ = self._run({"mode": "stdio", "program": program}, test_input.encode(), time_limit, 1)
        out = run.stdout.decode(errors="replace")
        if run.killed or run.returncode != 0:
            reason = _failure_reason(run)
        else:
            reason = None if normalize_output(out) == normalize_output(expected) else "wrong_answer"
        return {"passed": reason is None, "reason": reason, "time_s": run.wall_s, "stdout": out[:200]}

    def _function_tests(self, program: str, tests: list[TestPlan], time_limit: float) -> list[dict[str, Any]]:
        results: list[dict[str, Any] | None] = [None] * len(tests)
        requests = [test.request() for test in tests]
        start = 0
        while start < len(tests):
            run, watcher = self._run({"mode": "function", "program": program, "tests": requests, "start": start},
                                     b"", time_limit, len(tests) - start + 1)
            loaded, running, began, load_error = False, None, 0.0, None
            values: dict[int, tuple[str, bytes]] = {}
            for arrival, words in watcher.verified:
                word = words[0].decode()
                if word == "loaded":
                    loaded = True
                elif word == "load_error":
                    load_error = b" ".join(words[1:]).decode(errors="replace")
                elif word == "start":
                    running, began, values = int(words[1]), arrival, {}
                elif word == "value":  # value I J =|! DATA
                    values[int(words[2])] = (words[3].decode(), words[4])
                elif word in ("pass", "fail", "end"):
                    if word == "end":
                        reason = tests[int(words[1])].verdict(values)
                    else:
                        reason = None if word == "pass" else b" ".join(words[3:]).decode(errors="replace")
                    results[int(words[1])] = {"passed": reason is None, "reason": reason, "time_s": float(words[2])}
                    running = None
            if not loaded:  # the program itself failed: every remaining test fails with it
                reason = f"program: {load_error or _failure_reason(run)}"
                return [r or {"passed": False, "reason": reason, "time_s": 0.0} for r in results]
            if running is not None:
                results[running] = {"passed": False, "reason": _failure_reason(run), "time_s": time.monotonic() - began}
            elif results[start] is None:  # died between tests: blame the next one, so we progress
                results[start] = {"passed": False, "reason": _failure_reason(run), "time_s": 0.0}
            start = next((i for i in range(start, len(tests)) if results[i] is None), len(tests))
        return results  # type: ignore[return-value]
