"""User namespaces in which a sandbox started by host root can drop to an unprivileged host uid.

The kernel never enforces RLIMIT_NPROC for processes whose real uid is host root, and in a user
namespace made by root (bwrap --unshare-user, unshare -r) the sandbox's uid still maps to host
root. So when we are root we make the namespace ourselves with two mappings:
inner 0 -> host 0 (lets bwrap set up the mounts) and inner SANDBOX_UID -> host nobody (65534);
the harness switches to SANDBOX_UID before running untrusted code, which clears its capabilities
and puts its processes under RLIMIT_NPROC. One namespace per concurrently running sandbox, so
the process counts of two sandboxes never mix.
"""
from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import time
from collections.abc import Iterator

SANDBOX_UID = 1
HOST_UID = 65534


def _create() -> int:
    """A user namespace with the mappings above, held by an fd (it lives as long as the fd)."""
    helper = subprocess.Popen(["unshare", "--user", "--", "cat"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ours = os.readlink("/proc/self/ns/user")
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{helper.pid}/ns/user") == ours:  # until unshare(2) happened
            if helper.poll() is not None or time.monotonic() > deadline:
                raise OSError(f"unshare --user failed: {helper.stderr.read().decode(errors='replace')}")
            time.sleep(0.0005)
        mapping = f"0 0 1\n{SANDBOX_UID} {HOST_UID} 1\n"
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{helper.pid}/{name}", "w") as f:
                f.write(mapping)
        return os.open(f"/proc/{helper.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        helper.stdin.close()
        helper.wait()
        helper.stderr.close()


class UsernsPool:
    """Reusable namespace fds; grows to the highest concurrency seen."""

    def __init__(self) -> None:
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()

    @contextlib.contextmanager
    def acquire(self) -> Iterator[int]:
        try:
            fd = self._free.get_nowait()
        except queue.Empty:
            fd = _create()
        try:
            yield fd
        finally:
            self._free.put(fd)
