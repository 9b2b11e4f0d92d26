"""Reward lookup by name and batch scoring.

get_reward("math" | "code" | "package.module:function", **options) -> fn(response, row) -> dict
with keys reward (float), correct (bool) and info (dict). Options configure the built-ins
(see MathReward / CodeReward) or are bound as keyword arguments of a custom function.
"""

from __future__ import annotations

import functools
import importlib
import math
import queue
import threading
import time
from typing import Any, Callable

from .code_reward import CodeReward
from .math_reward import MathReward
from .result import InvalidReward, RewardResult

RewardFn = Callable[[str, dict], dict]
BUILTIN_REWARDS: dict[str, Callable[..., RewardFn]] = {"math": MathReward, "code": CodeReward}


def load_function(path: str, what: str) -> Callable[..., Any]:
    """The function at "package.module:function"; a clear error naming `what` otherwise."""
    module_name, _, attr = path.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load {what} {path!r}: {exc}") from exc
    if not callable(fn):
        raise ValueError(f"{what} {path!r} is not callable")
    return fn


def get_reward(name: str | RewardFn, **options: Any) -> RewardFn:
    if callable(name):
        fn = name
    elif name in BUILTIN_REWARDS:
        return BUILTIN_REWARDS[name](**options)  # unknown options fail here, not at the first call
    elif ":" in name:
        fn = load_function(name, "reward")
    else:
        raise ValueError(f"unknown reward {name!r}: use one of {sorted(BUILTIN_REWARDS)} or 'package.module:function'")
    return functools.partial(fn, **options) if options else fn


def _score_one(fn: RewardFn, response: str, row: dict) -> dict:
    """One response's score. A reward function that raises or returns no valid reward gives an
    explicit failure (no verdict) with the reason, never the batch's loss and never a "wrong"."""
    try:
        return RewardResult.coerce(fn(response, row)).as_dict()
    except InvalidReward as exc:
        return RewardResult.unavailable("invalid_reward", error=str(exc)).as_dict()
    except Exception as exc:  # noqa: BLE001 - any failure of one item is reported, not raised
        return RewardResult.unavailable("reward_error", error=f"{type(exc).__name__}: {exc}"[:500]).as_dict()


def score_batch(
    name_or_fn: str | RewardFn,
    responses: list[str],
    rows: list[dict],
    concurrency: int = 4,
    timeout: float | None = None,
    **options: Any,
) -> list[dict]:
    """Score responses[i] against rows[i], `concurrency` at a time, results in input order.
    Threads suffice: the built-ins spend their time in sandbox or checker processes.

    timeout: seconds one item may take; an item still running then is a "timeout" failure and
    its thread is abandoned (a Python thread cannot be killed), so a hung reward function
    costs its timeout and one idle thread, never the batch."""
    if len(responses) != len(rows):
        raise ValueError(f"{len(responses)} responses but {len(rows)} rows")
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be > 0 or None, got {timeout}")
    fn = get_reward(name_or_fn, **options)
    results: list[dict | None] = [None] * len(rows)
    finished: queue.SimpleQueue[tuple[int, dict]] = queue.SimpleQueue()
    running: dict[int, float] = {}  # item -> deadline (monotonic)
    todo = iter(range(len(rows)))

    def work(i: int) -> None:
        finished.put((i, _score_one(fn, responses[i], rows[i])))

    while True:
        while len(running) < concurrency and (i := next(todo, None)) is not None:
            running[i] = time.monotonic() + timeout if timeout else math.inf
            threading.Thread(target=work, args=(i,), name=f"reward-{i}", daemon=True).start()
        if not running:
            return results  # type: ignore[return-value]
        wait = min(running.values()) - time.monotonic()
        try:
            i, result = finished.get(timeout=None if wait == math.inf else max(wait, 0.0))
        except queue.Empty:
            now = time.monotonic()
            for i in [i for i, deadline in running.items() if deadline <= now]:
                del running[i]
                results[i] = RewardResult.unavailable(
                    "timeout", error=f"reward function ran over {timeout} s"
                ).as_dict()
            continue
        if running.pop(i, None) is not None:  # else: it had timed out already, its late answer is dropped
            results[i] = result
