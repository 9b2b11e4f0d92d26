"""Runs INSIDE the sandbox as `python -S -I harness.py IN_FD OUT_FD RUN_ID`. Standard library only.

It reads one request (a marshal'd dict: importing json would double start-up) from IN_FD, then,
before any untrusted code runs: applies the rlimits, drops to an unprivileged uid when the
sandbox started as root (RLIMIT_NPROC is not enforced for host root), and installs an audit hook
that denies what could forge a verdict: frame/GC introspection (the run's key lives in main's
frame), tracing, code-object construction, ctypes, and exec'ing other programs (subprocess and
asyncio, which import _posixsubprocess, are unavailable; so is traceback formatting, which reads
frames). Audit hooks are not a security boundary on their own: containment never depends on
them (the namespaces and limits do), only the unforgeability of verdicts does.

Events go to OUT_FD as lines "WORD [ARGS] MAC" (ready, loaded | load_error REASON, then per
test: start I, pass I SECONDS | fail I SECONDS REASON, finally done), MAC = keyed BLAKE2b of the
words under a random per-run key; the host drops lines whose MAC does not verify. A test counts
as passed only when the host reads a signed "pass i", written here after exec() of the assert
returned normally; stdout, the exit status, atexit handlers and exceptions never count.

Modes (request["mode"]): "stdio" runs the program as __main__ on the stdin the host provides
(the host compares stdout); "function" runs the program, then each assert of tests[start:].
"""
import marshal
import os
import resource
import sys
import time
import types  # noqa: F401 - imported before the guard: it reads tb_frame at import
from _blake2 import blake2b  # not hashlib: its OpenSSL import costs start-up time

_DENIED_EVENTS = frozenset({
    "sys._current_frames", "sys.settrace", "sys.setprofile", "sys.addaudithook",
    "gc.get_objects", "gc.get_referrers", "gc.get_referents",
    "code.__new__", "function.__new__",
    "os.exec", "os.posix_spawn", "os.spawn", "os.system", "subprocess.Popen", "os.startfile",
})
_DENIED_ATTRIBUTES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
_DENIED_IMPORTS = frozenset({"ctypes", "_ctypes", "_posixsubprocess", "_testcapi", "_testinternalcapi",
                             "_xxsubinterpreters"})


class SandboxDenied(RuntimeError):
    """RuntimeError so that a denied sys.addaudithook is silently refused, as CPython specifies."""


class _FrameDenied(SandboxDenied, ValueError):
    """Also a ValueError: stdlib callers of sys._getframe (namedtuple, enum, warnings, typing)
    already treat ValueError as "no caller frame" and carry on."""


def _guard(event, args):
    if event in _DENIED_EVENTS or event.startswith("ctypes."):
        raise SandboxDenied(event)
    if event == "sys._getframe":
        raise _FrameDenied(event)
    if event == "object.__getattr__" and args[1] in _DENIED_ATTRIBUTES:
        raise SandboxDenied(f"{event} {args[1]}")
    if event == "import" and args[0].partition(".")[0] in _DENIED_IMPORTS:
        raise SandboxDenied(f"import {args[0]}")
    if event == "open" and isinstance(args[0], (str, bytes)):
        if os.path.realpath(os.fsdecode(args[0])).startswith("/proc/"):
            raise SandboxDenied("open under /proc")  # /proc/self/mem would expose the nonce


def _read_all(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _apply_limits(limits):
    for name, value in limits.items():
        which = getattr(resource, "RLIMIT_" + name.upper())
        hard = value + 1 if name == "cpu" else value  # soft CPU limit sends SIGXCPU first
        resource.setrlimit(which, (value, hard))


def _drop_privileges(uid):
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)  # also clears every capability held in the user namespace


def main():
    in_fd, out_fd = int(sys.argv[1]), int(sys.argv[2])
    request = marshal.loads(_read_all(in_fd))
    os.close(in_fd)
    _apply_limits(request["limits"])
    if request.get("drop_to") is not None:
        _drop_privileges(request["drop_to"])
    key = bytes.fromhex(request["key"])
    tests = []
    for i, source in enumerate(request.get("tests", ())):
        try:
            tests.append((str(i).encode(), compile(source, f"<test {i}>", "exec", dont_inherit=True, optimize=0)))
        except SyntaxError:
            tests.append((str(i).encode(), None))
    tests = tests[request.get("start", 0):]
    stdio = request["mode"] == "stdio"
    try:
        program = compile(request["program"], "<program>", "exec", dont_inherit=True, optimize=0)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:  # the program's fault: a verdict
        program = exc
    del request
    module = type(sys)("__main__")
    sys.modules["__main__"] = module
    # Everything used after the program ran is bound now: the program may rebind builtins.
    write, exit_now, run, mac, clock, str_, isinstance_, BaseException_, SystemExit_ = (
        os.write, os._exit, exec, blake2b, time.perf_counter, str, isinstance, BaseException, SystemExit)

    def report(*words):
        # Signed, not secret: a program that hijacks OUT_FD sees only true messages, and
        # cannot sign "pass i" without the key, which lives in this frame only.
        message = b" ".join(words)
        try:
            write(out_fd, message + b" " + mac(message, key=key, digest_size=16).hexdigest().encode() + b"\n")
        except BaseException_:
            exit_now(3)

    def describe(exc):
        try:
            text = str_(type(exc).__name__) + ": " + str_(exc)
            return text[:200].encode("utf-8", "replace").replace(b"\n", b" ")
        except BaseException_:
            return b"unprintable exception"

    report(b"ready")
    if isinstance(program, Exception):
        report(b"load_error", describe(program))
        exit_now(1)
    sys.addaudithook(_guard)
    if stdio:  # behave like `python program.py`; the host judges stdout
        os.close(out_fd)
        run(program, module.__dict__)
        return
    try:
        run(program, module.__dict__)
    except BaseException_ as exc:  # SystemExit too: exiting before the tests passes nothing
        report(b"load_error", describe(exc))
        exit_now(0)
    report(b"loaded")
    for index, test in tests:
        report(b"start", index)
        began = clock()
        try:
            run(test, module.__dict__)
        except BaseException_ as exc:
            elapsed = b"%.6f" % (clock() - began)
            report(b"fail", index, elapsed, b"SystemExit" if isinstance_(exc, SystemExit_) else describe(exc))
            continue
        report(b"pass", index, b"%.6f" % (clock() - began))
    report(b"done")
    exit_now(0)  # skip atexit handlers and finalizers the program registered


if __name__ == "__main__":
    main()
