"""Reward lookup by name and batch scoring.

get_reward("math" | "code" | "package.module:function", **options) -> fn(response, row) -> dict
with keys reward (float), correct (bool) and info (dict). Options configure the built-ins
(see MathReward / CodeReward) or are bound as keyword arguments of a custom function.
"""
from __future__ import annotations

import functools
import importlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from .code_reward import CodeReward
from .math_reward import MathReward
from .result import RewardResult

RewardFn = Callable[[str, dict], dict]
BUILTIN_REWARDS: dict[str, Callable[..., RewardFn]] = {"math": MathReward, "code": CodeReward}


def get_reward(name: str | RewardFn, **options: Any) -> RewardFn:
    if callable(name):
        fn = name
    elif name in BUILTIN_REWARDS:
        return BUILTIN_REWARDS[name](**options)  # unknown options fail here, not at the first call
    elif ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot load reward {name!r}: {exc}") from exc
        if not callable(fn):
            raise ValueError(f"reward {name!r} is not callable")
    else:
        raise ValueError(f"unknown reward {name!r}: use one of {sorted(BUILTIN_REWARDS)} or 'package.module:function'")
    return functools.partial(fn, **options) if options else fn


def _score_one(fn: RewardFn, response: str, row: dict) -> dict:
    """One response's score; a crash becomes reward 0 with the reason, never the batch's loss."""
    try:
        return RewardResult.coerce(fn(response, row)).as_dict()
    except Exception as exc:  # noqa: BLE001 - any failure of one item is reported, not raised
        return RewardResult.failure("reward_error", error=f"{type(exc).__name__}: {exc}").as_dict()


def score_batch(name_or_fn: str | RewardFn, responses: list[str], rows: list[dict],
                concurrency: int = 4, **options: Any) -> list[dict]:
    """Score responses[i] against rows[i], `concurrency` at a time, results in input order.
    Threads suffice: the built-ins spend their time in sandbox or checker processes."""
    if len(responses) != len(rows):
        raise ValueError(f"{len(responses)} responses but {len(rows)} rows")
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    fn = get_reward(name_or_fn, **options)
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="reward") as pool:
        return list(pool.map(functools.partial(_score_one, fn), responses, rows))
