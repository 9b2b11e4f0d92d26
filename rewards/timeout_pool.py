"""A small pool of persistent worker processes whose calls are bounded in wall time.

Signal-based timeouts (math_verify's own, `signal.alarm`) only work in the main thread of the
main interpreter; reward code runs in thread pools and Ray actors. Here each call runs in a
separate worker process; a call that overruns kills its worker (SIGKILL) and a fresh one is
forked to replace it, so a pathological input costs its timeout and never the pool.
Workers are forked from a forkserver that already imported the heavy modules, which keeps
replacement cheap (milliseconds, not the seconds of a sympy import).
"""
from __future__ import annotations

import atexit
import importlib
import multiprocessing
import queue
import resource
import threading
from multiprocessing.connection import Connection
from typing import Any

_STARTUP_TIMEOUT_S = 120.0


class WorkerCrashed(RuntimeError):
    """The worker died while running the call (segfault, stack overflow, OOM kill)."""


def _serve(conn: Connection, preload: tuple[str, ...], memory_mb: int | None) -> None:
    if memory_mb:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    for name in preload:
        importlib.import_module(name)
    conn.send("ready")
    while True:
        try:
            target, args = conn.recv()
        except EOFError:
            return
        try:
            module, _, name = target.partition(":")
            conn.send((True, getattr(importlib.import_module(module), name)(*args)))
        except BaseException as exc:  # report everything; the worker itself must survive
            conn.send((False, f"{type(exc).__name__}: {exc}"[:500]))


class _Worker:
    def __init__(self, ctx: Any, preload: tuple[str, ...], memory_mb: int | None) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, preload, memory_mb), daemon=True)
        self.process.start()
        child.close()
        self.ready = False

    def wait_ready(self) -> None:
        if self.ready:
            return
        if not self.conn.poll(_STARTUP_TIMEOUT_S) or self.conn.recv() != "ready":
            self.kill()
            raise WorkerCrashed("worker failed to start")
        self.ready = True

    def kill(self, wait: bool = True) -> None:
        self.process.kill()
        self.conn.close()
        if wait:
            self.process.join()
        else:  # a worker that grew to gigabytes takes a while to exit: reap it off the caller's clock
            threading.Thread(target=self.process.join, daemon=True).start()


class TimeoutPool:
    """Thread-safe: any number of threads may `call` at once; at most `max_workers` run."""

    def __init__(self, max_workers: int, preload: tuple[str, ...] = (), memory_mb: int | None = 2048) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        self._ctx = multiprocessing.get_context("forkserver")
        # Applies only if this process has not started the forkserver yet; otherwise each new
        # worker imports `preload` itself before reporting ready (slower, still correct).
        self._ctx.set_forkserver_preload(list(preload))
        self._preload, self._memory_mb = preload, memory_mb
        # FIFO: a replacement goes to the back and has time to start before it is needed.
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(max_workers)
        self._workers: set[_Worker] = set()
        self._lock = threading.Lock()
        atexit.register(self.close)

    def call(self, target: str, args: tuple, timeout: float) -> Any:
        """Run target ("package.module:function") on args in a worker. Raises TimeoutError after
        `timeout` s, WorkerCrashed if the worker died, RuntimeError if the function raised.
        Naming the target (not passing the function) keeps its imports out of this process."""
        with self._slots:
            worker = self._take()
            try:
                worker.conn.send((target, args))
                if not worker.conn.poll(timeout):
                    raise TimeoutError(f"no answer within {timeout} s")
                ok, value = worker.conn.recv()
            except TimeoutError:
                self._discard(worker)
                raise
            except (EOFError, OSError) as exc:
                self._discard(worker)
                raise WorkerCrashed("the worker process died during the call") from exc
            self._idle.put(worker)
        if not ok:
            raise RuntimeError(value)
        return value

    def _take(self) -> _Worker:
        try:
            worker = self._idle.get_nowait()
        except queue.Empty:
            worker = _Worker(self._ctx, self._preload, self._memory_mb)
            with self._lock:
                self._workers.add(worker)
        try:
            worker.wait_ready()  # outside the timed section: startup is not the caller's fault
        except WorkerCrashed:
            with self._lock:
                self._workers.discard(worker)
            raise
        return worker

    def _discard(self, worker: _Worker) -> None:
        worker.kill(wait=False)
        with self._lock:
            self._workers.discard(worker)
        # Replace it now so the next caller finds a worker that is already starting up.
        replacement = _Worker(self._ctx, self._preload, self._memory_mb)
        with self._lock:
            self._workers.add(replacement)
        self._idle.put(replacement)

    def close(self) -> None:
        with self._lock:
            workers, self._workers = list(self._workers), set()
        for worker in workers:
            worker.kill()
