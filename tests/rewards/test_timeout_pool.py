import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from rewards.timeout_pool import TimeoutPool, WorkerCrashed, WorkerUnavailable


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


def test_a_worker_that_cannot_start_is_reported_not_waited_for(monkeypatch):
    import rewards.timeout_pool as timeout_pool

    monkeypatch.setattr(timeout_pool, "_RETRY_AFTER_S", 0.5)
    pool = TimeoutPool(1, preload=("no_such_module_here",), memory_mb=None)
    try:
        with pytest.raises(WorkerUnavailable, match="no_such_module_here"):
            pool.call("operator:add", (1, 2), timeout=30)
        start = time.monotonic()  # within the retry pause: fails at once, starts nothing
        with pytest.raises(WorkerUnavailable, match="not retried"):
            pool.call("operator:add", (1, 2), timeout=30)
        assert time.monotonic() - start < 0.1
        time.sleep(0.6)  # after it: a fresh start is tried (and fails the same way)
        with pytest.raises(WorkerUnavailable, match="No module named 'no_such_module_here'"):
            pool.call("operator:add", (1, 2), timeout=30)
    finally:
        pool.close()


def test_a_worker_killed_while_idle_is_replaced_without_failing_a_call(pool):
    pids = {pool.call("os:getpid", (), timeout=30) for _ in range(4)}
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    assert pool.call("operator:add", (2, 2), timeout=30) == 4
    assert pool.call("os:getpid", (), timeout=30) not in pids


def test_a_dead_zygote_is_replaced_and_its_workers_keep_serving():
    pool = TimeoutPool(1, memory_mb=None)
    try:
        worker_pid = pool.call("os:getpid", (), timeout=30)
        zygote = pool._zygote.process
        zygote.kill()
        zygote.wait()
        assert pool.call("os:getpid", (), timeout=30) == worker_pid  # the worker outlives its zygote
        with pytest.raises(TimeoutError):  # kills that worker: the next one needs a new zygote
            pool.call("time:sleep", (60,), timeout=0.3)
        assert pool.call("operator:add", (2, 3), timeout=60) == 5
        assert pool._zygote.process.pid != zygote.pid
    finally:
        pool.close()


POOL_OWNER = """
import sys, time
from rewards.timeout_pool import TimeoutPool
pool = TimeoutPool(2, memory_mb=None)
print(pool.call("os:getpid", (), 60), pool.call("os:getpid", (), 60), flush=True)
pool.call("time:sleep", (600,), 600)  # killed while a worker is busy
"""


def test_workers_exit_when_their_pool_process_dies(tmp_path, project_dir):
    """No orphans: SIGKILL the pool's process while one worker is busy and one is idle."""
    script = tmp_path / "owner.py"
    script.write_text(POOL_OWNER)
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path,
                             env={**os.environ, "PYTHONPATH": str(project_dir)})
    pids = [int(p) for p in owner.stdout.readline().split()]
    assert pids and owner.pid not in pids
    time.sleep(0.5)
    owner.kill()
    owner.wait()
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if _alive(pid)]


def _alive(pid: int) -> bool:
    """Running and not a zombie (a reaped child's pid may be reused: compare the command line)."""
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        return state != "Z" and "timeout_pool" in open(f"/proc/{pid}/cmdline").read()
    except OSError:
        return False
