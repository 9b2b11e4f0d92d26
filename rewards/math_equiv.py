"""Runs inside TimeoutPool workers: symbolic answer equivalence with math_verify.

math_verify's own timeouts use signal.alarm, which fails outside the main thread; they are
disabled here and the pool bounds the time instead. Each worker imports this module when it
starts, before it reports ready."""
from __future__ import annotations

import logging

from math_verify import parse, verify

logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled" warnings: intended


def equivalent(answer: str, ground_truth: str) -> bool:
    gold = parse(f"\\boxed{{{ground_truth}}}", parsing_timeout=None)
    pred = parse(f"\\boxed{{{answer}}}", parsing_timeout=None)
    if not gold or not pred:
        return False
    return bool(verify(gold, pred, timeout_seconds=None))


# Warm math_verify's lazy caches (ANTLR parser tables, sympy) at import: a worker imports this
# module before it reports ready, so it starts hot instead of paying ~0.5 s on its first
# check, inside that check's timeout.
equivalent("\\frac{1}{2}", "0.5")
