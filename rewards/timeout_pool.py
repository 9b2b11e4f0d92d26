"""A small pool of persistent worker processes whose calls are bounded in wall time.

Signal-based timeouts (math_verify's own, `signal.alarm`) only work in the main thread of the
main interpreter; reward code runs in thread pools and Ray actors. Here each call runs in a
separate worker process; a call that overruns kills its worker (SIGKILL) and a fresh one
replaces it, so a pathological input costs its timeout and never the pool.

Workers do not come from multiprocessing: its spawn/forkserver children re-import the caller's
`__main__` (which breaks unguarded scripts, notebooks, some Ray workers) and a plain fork copies
the caller's threads' held locks. Instead the pool starts one small program of its own, the
zygote (`python -c _BOOT`, given the caller's `sys.path` and nothing else), which imports the
`preload` modules once and then forks a worker per request; the pool hands it each worker's two
pipe ends over a Unix socket (SCM_RIGHTS). The interpreter start and the imports (~0.5-1.5 s)
happen once, when the pool is built; a new or replacement worker costs a fork (milliseconds).
A zygote or worker that cannot start raises WorkerUnavailable, never a wrong answer.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

_STARTUP_TIMEOUT_S = 120.0  # a cold page cache can make the first sympy import take ~20 s
_FORK_TIMEOUT_S = 30.0
_RETRY_AFTER_S = 5.0  # after a failed start, calls fail at once for this long (no start storm)

# The zygote program. Only the stdlib is imported before sys.path is the caller's, so a file
# in the current directory cannot shadow the modules it imports.
_BOOT = (
    "import json, sys; a = json.loads(sys.argv[1]); sys.path[:] = a['path']; "
    "from rewards.timeout_pool import zygote; zygote(a)"
)


class WorkerCrashed(RuntimeError):
    """The worker died while running the call (segfault, stack overflow, OOM kill)."""


class WorkerUnavailable(RuntimeError):
    """No worker could be started (bad interpreter, import error, no memory, start-up hang)."""


def zygote(args: dict[str, Any]) -> None:
    """The zygote's loop (runs in its own program): preload, say ready, fork workers on request."""
    import importlib
    import resource
    import traceback

    replies = Connection(args["fd"])
    requests = socket.socket(fileno=os.dup(args["fd"]))
    try:
        if args["memory_mb"]:
            limit = args["memory_mb"] * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        for name in args["preload"]:
            importlib.import_module(name)
    except BaseException as exc:  # tell the pool why, instead of a bare EOF
        replies.send(("failed", "".join(traceback.format_exception_only(exc)).strip()[-500:]))
        return
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel
    replies.send(("ready", None))
    while True:
        message, fds, _, _ = socket.recv_fds(requests, 1, 2)
        if not message:  # the pool's process closed the socket or died
            return
        try:
            pid = os.fork()
        except OSError as exc:
            replies.send(("failed", f"cannot fork a worker: {exc}"))
        else:
            if pid == 0:
                requests.close()
                replies.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _serve(Connection(fds[0], writable=False), Connection(fds[1], readable=False))
                os._exit(0)
            replies.send(("forked", pid))
        for fd in fds:
            os.close(fd)


def _serve(requests: Connection, replies: Connection) -> None:
    """A worker's loop: answer calls until the pool closes the pipe."""
    import importlib

    threading.Thread(target=_exit_on_hangup, args=(requests.fileno(),), daemon=True).start()
    while True:
        try:
            target, call_args = requests.recv()
        except EOFError:
            return
        try:
            module, _, name = target.partition(":")
            replies.send((True, getattr(importlib.import_module(module), name)(*call_args)))
        except BaseException as exc:  # report everything; the worker itself must survive
            replies.send((False, f"{type(exc).__name__}: {exc}"[:500]))


def _exit_on_hangup(fd: int) -> None:
    """Exit once the pool's end of the request pipe is closed (its process died), even in the
    middle of a call that never ends. Events 0: poll reports only the hang-up, never data."""
    poller = select.poll()
    poller.register(fd, 0)
    while True:
        for _, event in poller.poll():
            if event & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                os._exit(0)


class _Worker:
    def __init__(self, pid: int, requests: Connection, replies: Connection) -> None:
        self.pid, self.requests, self.replies = pid, requests, replies

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)  # the zygote reaps its children at once: a dead pid is gone
            return True
        except OSError:  # gone (or reused by someone else's process)
            return False

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.requests.close()
        self.replies.close()


class _Zygote:
    def __init__(self, preload: tuple[str, ...], memory_mb: int | None) -> None:
        ours, theirs = socket.socketpair()
        # The caller's import path, plus this package's root in case the caller found it otherwise.
        path = [p for p in sys.path if isinstance(p, str)] + [str(Path(__file__).resolve().parents[1])]
        args = {"path": path, "preload": list(preload), "memory_mb": memory_mb, "fd": theirs.fileno()}
        try:
            if not sys.executable:
                raise OSError("sys.executable is empty: this interpreter cannot start programs")
            self.process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, json.dumps(args)],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except OSError as exc:
            ours.close()
            raise WorkerUnavailable(f"cannot start the worker program: {exc}") from exc
        finally:
            theirs.close()
        self.sock = ours
        self.replies = Connection(os.dup(ours.fileno()), writable=False)
        self.ready = False
        self.lock = threading.Lock()

    def fork(self) -> _Worker:
        with self.lock:  # one request at a time: replies come back in order
            self._wait_ready()
            request_r, request_w = os.pipe()
            reply_r, reply_w = os.pipe()
            try:
                socket.send_fds(self.sock, [b"F"], [request_r, reply_w])
                status, value = self.replies.recv() if self.replies.poll(_FORK_TIMEOUT_S) else ("hung", None)
            except (OSError, EOFError):
                status, value = "died", f"the worker program exited (code {self.process.poll()})"
            finally:
                os.close(request_r)
                os.close(reply_w)
            if status != "forked":
                os.close(request_w)
                os.close(reply_r)
                if status != "failed":  # its replies may now be out of step: never ask it again
                    self.process.kill()
                    self.process.wait()
                raise WorkerUnavailable(f"no worker ({status}): {value or f'no answer in {_FORK_TIMEOUT_S} s'}")
            return _Worker(value, Connection(request_w, readable=False), Connection(reply_r, writable=False))

    def _wait_ready(self) -> None:
        if self.ready:
            return
        try:
            status, detail = self.replies.recv() if self.replies.poll(_STARTUP_TIMEOUT_S) else ("hung", None)
        except (EOFError, OSError):
            status, detail = "died", f"exit code {self.process.wait()}"
        if status != "ready":
            self.process.kill()  # a hung start is not waited for twice; the pool starts a new one
            raise WorkerUnavailable(
                f"the worker program failed to start ({status}): {detail or f'no answer in {_STARTUP_TIMEOUT_S} s'}"
            )
        self.ready = True

    def close(self) -> None:
        self.process.kill()
        self.sock.close()
        self.replies.close()
        self.process.wait()


class TimeoutPool:
    """Thread-safe: any number of threads may `call` at once; at most `max_workers` run."""

    def __init__(self, max_workers: int, preload: tuple[str, ...] = (), memory_mb: int | None = 2048) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        self._preload, self._memory_mb = preload, memory_mb
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(max_workers)
        self._workers: set[_Worker] = set()
        self._lock = threading.Lock()
        self._zygote: _Zygote | None = None
        self._failed: tuple[float, str] | None = None  # (when, why) of the last failed start
        atexit.register(self.close)
        try:
            self._zygote = _Zygote(preload, memory_mb)  # starts now, while the caller goes on
        except WorkerUnavailable as exc:  # reported by the calls, which the caller handles
            self._failed = (time.monotonic(), str(exc))

    def call(self, target: str, args: tuple, timeout: float) -> Any:
        """Run target ("package.module:function") on args in a worker. Raises TimeoutError after
        `timeout` s, WorkerCrashed if the worker died, WorkerUnavailable if none could start,
        RuntimeError if the function raised. Naming the target (not passing the function)
        keeps its imports out of this process."""
        with self._slots:
            worker = self._take()  # outside the timed section: startup is not the caller's fault
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
                raise WorkerCrashed("the worker process died during the call") from exc
            self._idle.put(worker)
        if not ok:
            raise RuntimeError(value)
        return value

    def _take(self) -> _Worker:
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                break
            if worker.alive():
                return worker
            self._discard(worker)  # died while idle (e.g. the OOM killer): not this call's fault
        worker = self._fork()
        with self._lock:
            self._workers.add(worker)
        return worker

    def _fork(self) -> _Worker:
        """A new worker from the zygote; a zygote that died is replaced once, right away."""
        with self._lock:
            failed, zygote = self._failed, self._zygote
            if failed is not None and time.monotonic() - failed[0] < _RETRY_AFTER_S:
                raise WorkerUnavailable(f"{failed[1]} (not retried for {_RETRY_AFTER_S} s)")
        try:
            if zygote is None:
                zygote = self._replace_zygote(None)
            try:
                worker = zygote.fork()
            except WorkerUnavailable:
                if zygote.process.poll() is None:  # alive but refusing: a restart would not help
                    raise
                worker = self._replace_zygote(zygote).fork()  # it died (OOM killer, crash): start anew
        except WorkerUnavailable as exc:
            self._failed = (time.monotonic(), str(exc))
            raise
        self._failed = None
        return worker

    def _replace_zygote(self, dead: _Zygote | None) -> _Zygote:
        with self._lock:
            if self._zygote is not dead:  # another thread replaced it already
                return self._zygote
            if dead is not None:
                dead.close()
            self._zygote = None
            self._zygote = _Zygote(self._preload, self._memory_mb)
            return self._zygote

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._workers.discard(worker)

    def close(self) -> None:
        with self._lock:
            workers, self._workers = list(self._workers), set()
            zygote, self._zygote = self._zygote, None
        for worker in workers:
            worker.kill()
        if zygote is not None:
            zygote.close()
