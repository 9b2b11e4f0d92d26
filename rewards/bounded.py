"""Work items in threads, each bounded in time: how reward workers run rule scorers (outcome and
process rewards) so that one hung item costs its timeout, never the batch."""
from __future__ import annotations

import math
import queue
import threading
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def bounded_map(work: Callable[[int], T], n: int, concurrency: int, timeout: float | None,
                timed_out: Callable[[int], T]) -> list[T]:
    """[work(0), ..., work(n - 1)], `concurrency` at a time in threads, in input order. An item still
    running after `timeout` seconds gets timed_out(i) instead and its thread is abandoned (a Python
    thread cannot be killed): it costs its timeout and one idle thread. Threads suffice: the
    built-in rewards spend their time in sandbox or checker processes."""
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be > 0 or None, got {timeout}")
    results: list[T | None] = [None] * n
    finished: queue.SimpleQueue[tuple[int, T]] = queue.SimpleQueue()
    running: dict[int, float] = {}  # item -> deadline (monotonic)
    todo = iter(range(n))

    def run(i: int) -> None:
        finished.put((i, work(i)))

    while True:
        while len(running) < concurrency and (i := next(todo, None)) is not None:
            running[i] = time.monotonic() + timeout if timeout else math.inf
            threading.Thread(target=run, args=(i,), name=f"bounded-{i}", daemon=True).start()
        if not running:
            return results  # type: ignore[return-value]
        wait = min(running.values()) - time.monotonic()
        try:
            i, result = finished.get(timeout=None if wait == math.inf else max(wait, 0.0))
        except queue.Empty:
            now = time.monotonic()
            for i in [i for i, deadline in running.items() if deadline <= now]:
                del running[i]
                results[i] = timed_out(i)
            continue
        if running.pop(i, None) is not None:  # else: it had timed out already, its late answer is dropped
            results[i] = result
