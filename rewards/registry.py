"""Reward lookup by name, the one "package.module:function" resolver, and batch scoring.

get_reward("math" | "code" | "choice" | "package.module:function", limits, **options) -> fn(response, row)
-> dict with keys reward (float), correct (bool) and info (dict). `limits` bound the built-ins
(rewards/limits.py); options configure them (see MathReward / CodeReward) or are bound as keyword
arguments of a custom function.
"""

from __future__ import annotations

import copy
import functools
import importlib
from typing import Any, Callable

from .bounded import bounded_map
from .choice_reward import choice_reward
from .code_reward import CodeReward
from .limits import RewardLimits
from .math_reward import MathReward
from .result import InvalidReward, RewardResult

RewardFn = Callable[[str, dict], dict]
BUILTIN_REWARDS = {"math": MathReward, "code": CodeReward}  # each has limited(limits, **options)
PLAIN_REWARDS = {"choice": choice_reward}  # no limits: pure string work, linear in the response


def load_function(path: str, what: str) -> Callable[..., Any]:
    """The function at "package.module:function" (tasks, rewards and process rewards all resolve
    theirs here); a clear error naming `what` otherwise."""
    module_name, _, attr = path.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:  # ValueError: an empty module name
        raise ValueError(f"cannot load {what} {path!r} ({type(exc).__name__}: {exc})") from exc
    if not callable(fn):
        raise ValueError(f"{what} {path!r} is not callable")
    return fn


def get_reward(name: str | RewardFn, limits: RewardLimits | None = None, **options: Any) -> RewardFn:
    if callable(name):
        fn = name
    elif name in BUILTIN_REWARDS:  # unknown options fail here, not at the first call
        return BUILTIN_REWARDS[name].limited(limits or RewardLimits(), **options)
    elif name in PLAIN_REWARDS:
        fn = PLAIN_REWARDS[name]
    elif ":" in name:
        fn = load_function(name, "reward")
    else:
        raise ValueError(f"unknown reward {name!r}: use one of {sorted({*BUILTIN_REWARDS, *PLAIN_REWARDS})} or "
                         "'package.module:function'")
    return functools.partial(fn, **options) if options else fn


def _score_one(fn: RewardFn, response: str, row: dict) -> dict:
    """One response's score. A reward function that raises or returns no valid reward gives an
    explicit failure (no verdict) with the reason, never the batch's loss and never a "wrong"."""
    try:
        # Its own copy: the samples of one prompt share their row, and a function that edits it
        # (row.pop(...)) must not change what its siblings are scored against.
        return RewardResult.coerce(fn(response, copy.deepcopy(row))).as_dict()
    except InvalidReward as exc:
        return RewardResult.unavailable("invalid_reward", error=str(exc)).as_dict()
    # BaseException too: a SystemExit would end the thread without an answer, read as a timeout
    # (or never answered without one).
    except BaseException as exc:  # noqa: BLE001 - any failure of one item is reported, not raised
        return RewardResult.unavailable("reward_error", error=describe_error(exc)).as_dict()


def describe_error(exc: BaseException) -> str:
    """"Type: message", at most 500 characters; never raises (a hostile __str__ may)."""
    try:
        return f"{type(exc).__name__}: {exc}"[:500]
    except Exception:  # noqa: BLE001
        return f"{type(exc).__name__} (its message could not be read)"


def score_batch(
    name_or_fn: str | RewardFn,
    responses: list[str],
    rows: list[dict],
    concurrency: int = 4,
    timeout: float | None = None,
    **options: Any,
) -> list[dict]:
    """Score responses[i] against rows[i], `concurrency` at a time, results in input order.

    timeout: seconds one item may take; an item still running then is a "timeout" failure
    (rewards/bounded.py), so a hung reward function costs its timeout, never the batch."""
    if len(responses) != len(rows):
        raise ValueError(f"{len(responses)} responses but {len(rows)} rows")
    fn = get_reward(name_or_fn, **options)
    return bounded_map(lambda i: _score_one(fn, responses[i], rows[i]), len(rows), concurrency, timeout,
                       lambda i: RewardResult.unavailable("timeout", error=f"reward function ran over {timeout} s")
                       .as_dict())
