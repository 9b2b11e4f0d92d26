"""A small pool of persistent worker processes whose calls are bounded in wall time.

Signal-based timeouts (math_verify's own, `signal.alarm`) only work in the main thread of the
main interpreter; reward code runs in thread pools and Ray actors. Here each call runs in a
separate worker process; a call that overruns kills its worker (SIGKILL) and a fresh one is
started to replace it, so a pathological input costs its timeout and never the pool.

Workers are their own small program (`python -c _BOOT`, speaking pickled messages over two
pipes), not multiprocessing children: a spawn/forkserver child re-imports the caller's
`__main__`, which breaks unguarded scripts, notebooks and some Ray workers, and a forked child
inherits the caller's threads' locks. A worker gets the caller's `sys.path` and nothing else
from it. All workers start when the pool is built and a replacement starts the moment its
predecessor is discarded, so the interpreter start and the preload imports (~0.5 s) stay off
the per-call path. A worker that cannot start raises WorkerUnavailable, never a wrong answer.
"""
from __future__ import annotations

import atexit
import json
import os
import queue
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

_STARTUP_TIMEOUT_S = 120.0  # a cold page cache can make the first sympy import take ~20 s
_RETRY_AFTER_S = 5.0  # after a failed start, calls fail at once for this long (no start storm)

# The worker program. Only the stdlib is imported before sys.path is the caller's, so a file
# in the current directory cannot shadow the modules the worker imports.
_BOOT = ("import json, sys; from multiprocessing.connection import Connection; "
         "a = json.loads(sys.argv[1]); sys.path[:] = a['path']; "
         "conn = Connection(a['send_fd'], readable=False); "
         "from rewards.timeout_pool import serve; serve(Connection(a['recv_fd'], writable=False), conn, a)")


class WorkerCrashed(RuntimeError):
    """The worker died while running the call (segfault, stack overflow, OOM kill)."""


class WorkerUnavailable(RuntimeError):
    """No worker could be started (bad interpreter, import error, no memory, start-up hang)."""


def serve(requests: Connection, replies: Connection, args: dict[str, Any]) -> None:
    """The worker's loop (runs in the worker program): preload, say ready, answer calls."""
    import importlib
    import resource
    import traceback

    try:
        if args["memory_mb"]:
            limit = args["memory_mb"] * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        for name in args["preload"]:
            importlib.import_module(name)
    except BaseException as exc:  # tell the pool why, instead of a bare EOF
        replies.send(("failed", "".join(traceback.format_exception_only(exc)).strip()[-500:]))
        return
    _exit_with(args["parent_pid"])
    replies.send(("ready", None))
    while True:
        try:
            target, call_args = requests.recv()
        except EOFError:  # the pool closed the pipe (or its process died)
            return
        try:
            module, _, name = target.partition(":")
            replies.send((True, getattr(importlib.import_module(module), name)(*call_args)))
        except BaseException as exc:  # report everything; the worker itself must survive
            replies.send((False, f"{type(exc).__name__}: {exc}"[:500]))


def _exit_with(parent_pid: int) -> None:
    """Exit when the pool's process is gone, even in the middle of a call that never ends
    (PR_SET_PDEATHSIG would fire when the *thread* that started us exits: not usable here)."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


class _Worker:
    def __init__(self, preload: tuple[str, ...], memory_mb: int | None) -> None:
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        # The caller's import path, plus this package's root in case the caller found it otherwise.
        path = [p for p in sys.path if isinstance(p, str)] + [str(Path(__file__).resolve().parents[1])]
        args = {"path": path, "preload": list(preload), "memory_mb": memory_mb,
                "recv_fd": request_r, "send_fd": reply_w, "parent_pid": os.getpid()}
        try:
            if not sys.executable:
                raise OSError("sys.executable is empty: this interpreter cannot start worker programs")
            self.process = subprocess.Popen([sys.executable, "-c", _BOOT, json.dumps(args)], pass_fds=(request_r, reply_w),
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        except OSError as exc:
            os.close(request_w)
            os.close(reply_r)
            raise WorkerUnavailable(f"cannot start a worker process: {exc}") from exc
        finally:  # the child holds its own copies of its ends
            os.close(request_r)
            os.close(reply_w)
        self.requests = Connection(request_w, readable=False)
        self.replies = Connection(reply_r, writable=False)
        self.ready = False

    def wait_ready(self) -> None:
        if self.ready:
            return
        try:
            status, detail = self.replies.recv() if self.replies.poll(_STARTUP_TIMEOUT_S) else ("hung", None)
        except (EOFError, OSError):
            status, detail = "died", f"exit code {self.process.poll()}"
        if status != "ready":
            self.kill()
            raise WorkerUnavailable(f"worker failed to start ({status}): {detail or f'no answer in {_STARTUP_TIMEOUT_S} s'}")
        self.ready = True

    def kill(self, wait: bool = True) -> None:
        self.process.kill()
        self.requests.close()
        self.replies.close()
        if wait:
            self.process.wait()
        else:  # a worker that grew to gigabytes takes a while to exit: reap it off the caller's clock
            threading.Thread(target=self.process.wait, daemon=True).start()


class TimeoutPool:
    """Thread-safe: any number of threads may `call` at once; at most `max_workers` run."""

    def __init__(self, max_workers: int, preload: tuple[str, ...] = (), memory_mb: int | None = 2048) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        self._preload, self._memory_mb = preload, memory_mb
        # FIFO: a replacement goes to the back and has time to start before it is needed.
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(max_workers)
        self._workers: set[_Worker] = set()
        self._lock = threading.Lock()
        self._failed: tuple[float, str] | None = None  # (when, why) of the last failed start
        atexit.register(self.close)
        try:
            for _ in range(max_workers):  # all start now, in parallel, while the caller goes on
                self._start()
        except WorkerUnavailable as exc:  # reported by the calls, which the caller handles
            self._failed = (time.monotonic(), str(exc))

    def call(self, target: str, args: tuple, timeout: float) -> Any:
        """Run target ("package.module:function") on args in a worker. Raises TimeoutError after
        `timeout` s, WorkerCrashed if the worker died, WorkerUnavailable if none could start,
        RuntimeError if the function raised. Naming the target (not passing the function)
        keeps its imports out of this process."""
        with self._slots:
            worker = self._take()
            try:
                worker.requests.send((target, args))
                if not worker.replies.poll(timeout):
                    raise TimeoutError(f"no answer within {timeout} s")
                ok, value = worker.replies.recv()
            except TimeoutError:
                self._discard(worker)
                raise
            except (EOFError, OSError) as exc:
                self._discard(worker)
                raise WorkerCrashed(f"the worker process died during the call (exit code {worker.process.poll()})") from exc
            self._idle.put(worker)
        if not ok:
            raise RuntimeError(value)
        return value

    def _take(self) -> _Worker:
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                worker = self._start(queue_it=False)
            if not worker.ready or worker.process.poll() is None:  # a start-up failure: wait_ready says why
                break
            self._discard(worker)  # died while idle (e.g. the OOM killer): not this call's fault
        try:
            worker.wait_ready()  # outside the timed section: startup is not the caller's fault
        except WorkerUnavailable as exc:
            with self._lock:
                self._workers.discard(worker)
            self._failed = (time.monotonic(), str(exc))
            raise
        self._failed = None
        return worker

    def _start(self, queue_it: bool = True) -> _Worker:
        """A new worker (starting in the background); queued as idle unless the caller takes it."""
        failed = self._failed
        if failed is not None and time.monotonic() - failed[0] < _RETRY_AFTER_S:
            raise WorkerUnavailable(f"{failed[1]} (not retried for {_RETRY_AFTER_S} s)")
        worker = _Worker(self._preload, self._memory_mb)
        with self._lock:
            self._workers.add(worker)
        if queue_it:
            self._idle.put(worker)
        return worker

    def _discard(self, worker: _Worker) -> None:
        worker.kill(wait=False)
        with self._lock:
            self._workers.discard(worker)
        try:  # replace it now, so the next caller finds a worker that is already starting up
            self._start()
        except WorkerUnavailable:
            pass  # the next call starts one itself and reports why it cannot

    def close(self) -> None:
        with self._lock:
            workers, self._workers = list(self._workers), set()
        for worker in workers:
            worker.kill()
