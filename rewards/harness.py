"""Runs INSIDE the sandbox as `python -S -I harness.pyc IN_FD OUT_FD RUN_ID` (compiled by the host).
Standard library only (the host imports plain_data_error from here too, so that both sides agree
on plain data).

It reads one request (a marshal'd dict: importing json would double start-up) from IN_FD, then,
before any untrusted code runs: applies the rlimits, drops to an unprivileged uid when the
sandbox started as root (RLIMIT_NPROC is not enforced for host root), imports the standard
modules the tests name, snapshots builtins and every loaded module, and installs an audit hook
that denies what could forge a verdict: frame/GC introspection (the run's key lives in main's
frame), tracing, code-object construction, ctypes, opening procfs files (/proc/self/mem), and
exec'ing other programs (subprocess and asyncio, which import _posixsubprocess, are unavailable;
so is traceback formatting, which reads frames). The hook and everything main() uses after the
program ran are bound before it ran. Audit hooks are not a security boundary on their own: containment never depends on
them (the namespaces and limits do), only the unforgeability of verdicts does.

Events go to OUT_FD as lines "WORD [ARGS] MAC" (ready, loaded | load_error REASON, then per
test: start I, then either pass I SECONDS | fail I SECONDS REASON for a test run as a statement,
or value I J = HEX | value I J ! REASON per expression and end I SECONDS for a compared test
(fail I SECONDS REASON if the statements before its assert raised);
finally done), MAC = keyed BLAKE2b of the words under a random per-run key; the host drops lines
whose MAC does not verify. A statement test passes only when the host reads a signed "pass i",
written here after exec() of it returned normally; a compared test passes only when the host's
own comparison of the signed values says so. stdout, the exit status, atexit handlers and
exceptions never count.

Every test runs in a fresh namespace: the program's globals minus the names of builtins, the
standard modules the test names, and a copy of the builtins as they were before the program
ran; the builtins module and every module loaded before the program are restored to that state
too. Expression values leave as marshal data only when they are exact built-in types, checked
by functions bound before the program ran (it may rebind builtins, patch modules, fake methods).

Modes (request["mode"]): "stdio" runs the program as __main__ on the stdin the host provides
(the host compares stdout); "function" runs the program, then each test of tests[start:], each
("exec", statement source) or ("eval", [expression sources]), with the module names it uses and,
for "eval", the statements to run before the expressions.
"""
import _thread
import marshal
import os
import resource
import sys
import time
import types  # imported before the guard: it reads tb_frame at import
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
_SCALARS = frozenset({int, float, bool, str, bytes, complex, type(None)})
_SEQUENCES = frozenset({list, tuple, set, frozenset})
MAX_DEPTH = 100
MAX_ITEMS = 1 << 20


class SandboxDenied(RuntimeError):
    """RuntimeError so that a denied sys.addaudithook is silently refused, as CPython specifies."""


class _FrameDenied(SandboxDenied, ValueError):
    """Also a ValueError: stdlib callers of sys._getframe (namedtuple, enum, warnings, typing)
    already treat ValueError as "no caller frame" and carry on."""


def _exact(value, _isinstance=isinstance, _join="".join, _bjoin=b"".join):
    """An exact str/bytes copy of value (a subclass's methods could lie to the checks), or None."""
    if _isinstance(value, str):
        return _join((value,))
    if _isinstance(value, bytes):
        return _bjoin((value,))
    return None


_PROC_DEVICE = os.stat("/proc").st_dev if os.path.isdir("/proc") else None


def _in_proc(path, _stat=os.stat, _proc_dev=_PROC_DEVICE):
    """Whether path names a file of procfs (/proc/self/mem would expose the key), by the device
    the kernel resolves it to: symlinks, `..` and relative paths cannot hide it, and no Python
    function the program could patch takes part."""
    try:
        return _stat(path).st_dev == _proc_dev
    except OSError:  # a file to create, or one open() cannot reach either: procfs has neither
        return False


def _guard(event, args, _type=type, _exact=_exact, _in_proc=_in_proc, _partition=str.partition,
           _startswith=str.startswith):
    # Every name is bound at definition: the program may rebind builtins and patch modules.
    if event in _DENIED_EVENTS or _startswith(event, "ctypes."):
        raise SandboxDenied(event)
    if event == "sys._getframe":
        raise _FrameDenied(event)
    if event == "object.__getattr__" and args[1] in _DENIED_ATTRIBUTES:
        raise SandboxDenied(event + " " + args[1])
    if event == "import":
        name = _exact(args[0])
        if name is None or _partition(name, ".")[0] in _DENIED_IMPORTS:
            raise SandboxDenied("import")
    if event == "open" and _type(args[0]) is not int:
        path = _exact(args[0])
        if path is None:  # its __fspath__ could name one file here and another to open()
            raise SandboxDenied("open of a path-like object")
        if args[1] is None and not _startswith(path, "/" if _type(path) is str else b"/"):
            raise SandboxDenied("os.open of a relative path")  # it may be relative to any dir_fd
        if _in_proc(path):
            raise SandboxDenied("open under /proc")


def plain_data_error(value, _type=type, _scalars=_SCALARS, _sequences=_SEQUENCES, _dict=dict,
                     _items=dict.items, _append=list.append, _pop=list.pop, _name=type.__repr__):
    """None when value is plain data: exact int, float, bool, str, bytes, complex, None, or an
    exact list, tuple, set, frozenset or dict of plain data; else why not. Every name it uses
    is bound here, at definition, so a program that rebinds builtins cannot change the answer,
    and no method of the value runs (exact built-in types iterate in C)."""
    stack, items = [(value, 0)], 0
    while stack:
        item, depth = _pop(stack)
        kind = _type(item)
        items += 1
        if items > MAX_ITEMS or depth > MAX_DEPTH:
            return "value too large or too deep"
        if kind in _scalars:
            continue
        if kind in _sequences:
            for element in item:
                _append(stack, (element, depth + 1))
        elif kind is _dict:
            for key, element in _items(item):
                _append(stack, (key, depth + 1))
                _append(stack, (element, depth + 1))
        else:
            return "not plain data: " + _name(kind)[:80]  # type.__repr__ runs no method of the value's
    return None


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


def _import_modules(names):
    modules = {}
    for name in names:
        try:
            modules[name] = __import__(name)
        except BaseException:  # a test naming a module we lack fails when it runs, not here
            pass
    return modules


def _restorer(_list=list, _len=len, _keys=dict.keys, _update=dict.update, _delete=dict.pop):
    """Snapshots every loaded module's namespace now; the returned function puts them back."""
    saved = [(module.__dict__, dict(module.__dict__)) for module in list(sys.modules.values())
             if type(module) is types.ModuleType]

    def restore():
        for namespace, before in saved:
            _update(namespace, before)
            if _len(namespace) != _len(before):  # the program added names
                for name in _list(_keys(namespace)):
                    if name not in before:
                        _delete(namespace, name, None)
    return restore


def _compile_tests(tests):
    compiled = []
    for i, (kind, sources, modules, setup) in enumerate(tests):
        try:
            if kind == "exec":
                code = compile(sources, f"<test {i}>", "exec", dont_inherit=True, optimize=0)
            else:
                code = [compile(s, f"<test {i}.{j}>", "eval", dont_inherit=True) for j, s in enumerate(sources)]
            setup = compile(setup, f"<test {i} setup>", "exec", dont_inherit=True) if setup else None
        except SyntaxError:
            code = None
        compiled.append((str(i).encode(), kind, code, modules, setup))
    return compiled


def main():
    in_fd, out_fd = int(sys.argv[1]), int(sys.argv[2])
    request = marshal.loads(_read_all(in_fd))
    os.close(in_fd)
    os.closerange(3, out_fd)  # whatever the launcher passed on besides stdio and the events pipe
    os.closerange(out_fd + 1, 1 << 16)
    _apply_limits(request["limits"])
    if request.get("drop_to") is not None:
        _drop_privileges(request["drop_to"])
    key = bytes.fromhex(request["key"])
    tests = _compile_tests(request.get("tests", ()))[request.get("start", 0):]
    stdio = request["mode"] == "stdio"
    try:
        program = compile(request["program"], "<program>", "exec", dont_inherit=True, optimize=0)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:  # the program's fault: a verdict
        program = exc
    wanted = sorted({n for _, _, _, names, _ in tests for n in names})
    modules = {name: dict(m.__dict__) for name, m in _import_modules(wanted).items()}
    del request
    restore = _restorer()  # before the program's module exists: its names are not reset
    builtins_before = dict(__builtins__.__dict__) if type(__builtins__) is types.ModuleType else dict(__builtins__)
    module = type(sys)("__main__")
    sys.modules["__main__"] = module
    # Everything used after the program ran is bound now: the program may rebind builtins.
    write, exit_now, run, mac, clock, str_, isinstance_, BaseException_, SystemExit_ = (
        os.write, os._exit, exec, blake2b, time.perf_counter, str, isinstance, BaseException, SystemExit)
    dict_, items, update, module_type, dumps, hex_, plain_error, type_, eval_, threads, enumerate_, join = (
        dict, dict.items, dict.update, types.ModuleType, marshal.dumps, bytes.hex, plain_data_error,
        type, eval, _thread._count, enumerate, "".join)

    def report(*words):
        # Signed, not secret: a program that hijacks OUT_FD sees only true messages, and
        # cannot sign "pass i" without the key, which lives in this frame only.
        message = b" ".join(words)
        try:
            write(out_fd, message + b" " + mac(message, key=key, digest_size=16).hexdigest().encode() + b"\n")
        except BaseException_:
            exit_now(3)

    def describe(exc):
        try:  # join: an exact str whatever str subclass the exception's methods return
            text = join((type_(exc).__name__, ": ", str_(exc)))
            return text[:200].encode("utf-8", "replace").replace(b"\n", b" ")
        except BaseException_:
            return b"unprintable exception"

    def namespace(names):
        fresh = {name: value for name, value in items(module.__dict__) if name not in builtins_before}
        fresh["__builtins__"] = dict_(builtins_before)
        for name in names:
            if name in modules:  # a copy of the module as it was: nothing of the program reaches it
                copy = module_type(name)
                update(copy.__dict__, modules[name])
                fresh[name] = copy
        return fresh

    def evaluate(index, code, names, setup, began):
        fresh = namespace(names)  # shared by the test's expressions: `(n := f(x)) > 0 and n < 9`
        if setup is not None:
            restore()
            try:
                run(setup, fresh)
            except BaseException_ as exc:
                reason = b"SystemExit" if isinstance_(exc, SystemExit_) else describe(exc)
                report(b"fail", index, b"%.6f" % (clock() - began), reason)
                return False
        for j, expression in enumerate_(code):
            position = str_(j).encode()
            restore()  # also between values: `f(1) == math.floor(2.5)` where f patches math.floor
            try:
                value = eval_(expression, fresh)
            except BaseException_ as exc:
                reason = b"SystemExit" if isinstance_(exc, SystemExit_) else describe(exc)
                report(b"value", index, position, b"!", reason)
                continue
            # A thread of the program could patch, between restore() and use, what a value uses.
            why = "a thread of the program is running" if threads() else plain_error(value)
            if why is None:
                try:  # a thread of the program may have changed the value since it was checked
                    data = hex_(dumps(value)).encode()  # hex: binascii's import costs start-up time
                except BaseException_:
                    why = "changed while being sent"
            if why is None:
                report(b"value", index, position, b"=", data)
            else:
                report(b"value", index, position, b"!", why.encode("utf-8", "replace").replace(b"\n", b" "))
        return True

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
    for index, kind, code, names, setup in tests:
        report(b"start", index)
        began = clock()
        if code is None:
            report(b"fail", index, b"0", b"SyntaxError in the test")
        elif kind == "eval":
            if evaluate(index, code, names, setup, began):
                report(b"end", index, b"%.6f" % (clock() - began))
        else:
            restore()
            try:
                run(code, namespace(names))
            except BaseException_ as exc:
                elapsed = b"%.6f" % (clock() - began)
                report(b"fail", index, elapsed, b"SystemExit" if isinstance_(exc, SystemExit_) else describe(exc))
                continue
            report(b"pass", index, b"%.6f" % (clock() - began))
    report(b"done")
    exit_now(0)  # skip atexit handlers and finalizers the program registered


if __name__ == "__main__":
    main()
