import threading
import time

import pytest

from rewards.timeout_pool import TimeoutPool, WorkerCrashed


@pytest.fixture(scope="module")
def pool():
    pool = TimeoutPool(2, memory_mb=None)
    yield pool
    pool.close()


def test_call_returns_and_reraises(pool):
    assert pool.call("operator:add", (2, 3), timeout=30) == 5
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        pool.call("operator:truediv", (1, 0), timeout=30)


def test_timeout_kills_and_replaces_the_worker(pool):
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        pool.call("time:sleep", (60,), timeout=0.5)
    assert time.monotonic() - start < 1.5
    assert pool.call("operator:mul", (6, 7), timeout=30) == 42


def test_crashed_worker_is_reported_and_replaced(pool):
    with pytest.raises(WorkerCrashed):
        pool.call("os:_exit", (1,), timeout=30)
    assert pool.call("operator:add", (1, 1), timeout=30) == 2


def test_timeouts_hold_in_non_main_threads(pool):
    elapsed = []

    def slow_call():
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            pool.call("time:sleep", (60,), timeout=0.5)
        elapsed.append(time.monotonic() - start)

    threads = [threading.Thread(target=slow_call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(elapsed) == 2 and max(elapsed) < 1.5
