"""Hostile inputs shared by the tests and bench/rewards.py: programs for the code sandbox and
answers for the math checker. Test code: not part of the rewards package.

Each attack is a program whose tests pass only if the attack worked. It is contained when it
scores 0, ends within its time budget, leaves no sandbox process behind, and the host-side
evidence (a file that must not exist, a server that must see no connection, ...) is clean.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

TIME_LIMIT_S = 1.0
MAX_WALL_S = 10.0  # generous: startup under load + a few 1 s tests + the kill


class HostBait:
    """Host-side things an escaped program could touch, and the evidence whether it did."""

    def __init__(self, project_dir: Path) -> None:
        self.marker = secrets.token_hex(6)
        self.secret = secrets.token_hex(16)
        self.secret_path = Path.home() / f".rewards-test-secret-{self.marker}"
        self.project_file = project_dir / f".escape-{self.marker}"
        self.tmp_probe = Path("/tmp") / f"rewards-probe-{self.marker}"
        self.tmp_file = Path("/tmp") / f"rewards-escape-{self.marker}"
        self.usr_file = Path("/usr") / f"rewards-escape-{self.marker}"
        self.env_name = f"REWARDS_TEST_SECRET_{self.marker}"
        self.connections = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]

    def __enter__(self) -> "HostBait":
        self.secret_path.write_text(self.secret)
        self.tmp_probe.write_text("probe")
        os.environ[self.env_name] = self.secret
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def __exit__(self, *exc: Any) -> None:
        self._server.close()
        os.environ.pop(self.env_name, None)
        for path in (self.secret_path, self.tmp_probe, self.tmp_file, self.usr_file, self.project_file):
            path.unlink(missing_ok=True)

    def fill(self, template: str) -> str:
        names = ("port", "secret_path", "project_file", "tmp_probe", "tmp_file", "usr_file", "env_name", "marker")
        return template.format(host_pid=os.getpid(), **{name: getattr(self, name) for name in names})


def _no_evidence(bait: HostBait) -> str | None:
    return None


def _no_connection(bait: HostBait) -> str | None:
    return f"server saw {bait.connections} connection(s)" if bait.connections else None


def _file_absent(attr: str) -> Callable[[HostBait], str | None]:
    def check(bait: HostBait) -> str | None:
        path = getattr(bait, attr)
        return f"{path} was written" if path.exists() else None
    return check


@dataclass(frozen=True)
class Attack:
    name: str
    program: str  # str.format template over HostBait.fill's names; braces doubled
    tests: tuple[str, ...] = ("assert escaped()",)
    stdio: tuple[str, str] | None = None  # (input, expected output) templates: a stdio row instead
    evidence: Callable[[HostBait], str | None] = _no_evidence

    def row(self, bait: HostBait) -> dict[str, Any]:
        if self.stdio:
            return {"test_method": "stdio", "test_input": [bait.fill(self.stdio[0])],
                    "test_output": [bait.fill(self.stdio[1])], "test_time_limit": TIME_LIMIT_S}
        return {"test_method": "function", "test_list": list(self.tests), "test_time_limit": TIME_LIMIT_S}


ATTACKS: tuple[Attack, ...] = (
    Attack("tcp_connect_host_server", """
import socket
def escaped():
    socket.create_connection(("127.0.0.1", {port}), timeout=0.5).close()
    return True
""", evidence=_no_connection),
    Attack("resolve_hostname", """
import socket
def escaped():
    return bool(socket.gethostbyname("pypi.org"))
"""),
    Attack("write_project_checkout", """
def escaped():
    open("{project_file}", "w").write("pwned")
    return True
""", evidence=_file_absent("project_file")),
    Attack("write_host_tmp", """
def escaped():
    assert open("{tmp_probe}").read() == "probe"  # only the host /tmp has it
    open("{tmp_file}", "w").write("pwned")
    return True
""", evidence=_file_absent("tmp_file")),
    Attack("read_home_secret", """
def escaped():
    print(open("{secret_path}").read())
    return True
"""),
    Attack("read_caller_env", """
import os
def escaped():
    return "{env_name}" in os.environ
"""),
    Attack("list_host_processes", """
import os
def escaped():
    pids = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    return str({host_pid}) in pids or len(pids) > 5
"""),
    Attack("kill_parent", """
import os, signal, time
parent = os.getppid()
for target in (parent, 1, -1, {host_pid}):
    try:
        os.kill(target, signal.SIGKILL)
    except OSError:
        pass
time.sleep(0.2)
def escaped():
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        return True  # the parent is gone
    return False
"""),
    Attack("fork_bomb", """
import os
children = 0
while True:
    try:
        if os.fork() == 0:
            children = 0
        else:
            children += 1
    except OSError:
        pass
"""),
    Attack("allocate_10_gib", """
blob = bytearray(10 * 1024 ** 3)
def escaped():
    return len(blob) > 0
"""),
    Attack("busy_loop_forever", """
while True:
    pass
"""),
    Attack("sleep_forever_with_daemon_child", """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(100000)
    os._exit(0)
time.sleep(100000)
"""),
    Attack("daemon_outlives_the_harness", """
import os, time
if os.fork() == 0:  # detached, holding no pipe of the host's: the run ends normally without it
    os.setsid()
    for fd in range(64):
        try:
            os.close(fd)
        except OSError:
            pass
    time.sleep(100000)
    os._exit(0)
def escaped():
    return False
"""),
    Attack("print_one_gigabyte", """
import sys
chunk = "x" * (1 << 20)
for _ in range(1024):
    sys.stdout.write(chunk)
def escaped():
    return True
"""),
    Attack("fill_private_tmp", """
written = 0
try:
    with open("/tmp/fill", "wb") as f:
        while written < (1 << 30):
            f.write(b"x" * (1 << 20))
            written += 1 << 20
except OSError:
    pass
def escaped():
    return written >= (1 << 30)
"""),
    Attack("sys_exit_before_asserts", """
import sys
def escaped():
    return False
sys.exit(0)
"""),
    Attack("os_exit_before_asserts", """
import os
def escaped():
    return False
os._exit(0)
"""),
    Attack("raise_systemexit_before_asserts", """
def escaped():
    return False
raise SystemExit
"""),
    Attack("exit_inside_assert", """
import os
def escaped():
    os._exit(0)
""", tests=("assert escaped()", "assert escaped()")),
    Attack("override_assertion_error", """
import builtins
class Harmless(Exception):
    pass
builtins.AssertionError = Harmless
AssertionError = Harmless
def escaped():
    return False
"""),
    Attack("rebind_builtins", """
import builtins, sys
real_exec = builtins.exec
builtins.exec = lambda *args, **kwargs: None
builtins.BaseException = type("Nothing", (Exception,), {{}})
builtins.isinstance = lambda *args: True
builtins.range = lambda *args: [0]
builtins.str = lambda *args: "0"
def escaped():
    return False
"""),
    Attack("monkeypatch_print_and_stdout", """
import builtins, sys, io
builtins.print = lambda *args, **kwargs: None
sys.stdout = io.StringIO()
def escaped():
    return False
"""),
    Attack("atexit_and_excepthook", """
import atexit, os, sys
atexit.register(lambda: os._exit(0))
sys.excepthook = lambda *args: os._exit(0)
def escaped():
    return False
"""),
    Attack("forge_report_lines", """
import os, threading
def spam():
    for fd in range(3, 64):
        for word in ("pass 0 0.0 00", "done 00", "pass 0 0.0"):
            try:
                os.write(fd, (word + "\\n").encode())
            except OSError:
                pass
def escaped():
    spam()
    os._exit(0)
"""),
    Attack("steal_key_from_frames", """
import sys, gc, os
def escaped():
    found = []
    for grab in (lambda: sys._getframe(1), lambda: sys.exc_info(),
                 lambda: [o for o in gc.get_objects() if isinstance(o, dict) and "key" in o]):
        try:
            found.append(grab())
        except Exception:
            pass
    try:
        raise ValueError
    except ValueError as exc:
        try:
            found.append(exc.__traceback__.tb_frame.f_back.f_locals)
        except Exception:
            pass
    try:
        found.append(open("/proc/self/mem", "rb"))
    except Exception:
        pass
    return any(isinstance(f, dict) and "key" in f for f in found)
"""),
    Attack("reach_proc_mem_around_the_guard", """
import os, os.path, posixpath
class Name(str):
    def partition(self, sep):
        return ("harmless", "", "")
    def startswith(self, prefix, *args):
        return False
class Flip:
    calls = 0
    def __fspath__(self):
        Flip.calls += 1
        return "/tmp" if Flip.calls == 1 else "/proc/self/mem"
posixpath.realpath = os.path.realpath = lambda path, **kw: "/tmp/x"
os.fsdecode = lambda path: "/tmp/x"
os.makedirs("/tmp/proc/self", exist_ok=True)
open("/tmp/proc/self/mem", "w").close()
try:
    os.symlink("/proc/self/mem", "/tmp/link")
except OSError:
    pass
def attempts():
    root = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    os.chdir("/tmp")
    yield lambda: __import__(Name("ctypes"))
    yield lambda: os.open(Flip(), os.O_RDONLY)
    yield lambda: open(Name("/proc/self/mem"), "rb")
    yield lambda: open("/tmp/link", "rb")
    yield lambda: open("/tmp/../proc/self/mem", "rb")
    yield lambda: os.open("proc/self/mem", os.O_RDONLY, dir_fd=root)
    os.chdir("/")
    yield lambda: open("proc/self/mem", "rb")
def escaped():
    proc = os.stat("/proc").st_dev
    for attempt in attempts():
        try:
            handle = attempt()
            fd = handle if isinstance(handle, int) else handle.fileno()
            if os.fstat(fd).st_dev == proc:
                return True
        except Exception:
            pass
    return False
"""),
    Attack("hijack_report_fd", """
import os
def escaped():
    r, w = os.pipe()
    for fd in range(3, 16):
        if fd not in (r, w):
            try:
                os.dup2(w, fd)
            except OSError:
                pass
    return False
""", tests=("assert escaped()", "assert escaped()")),
    Attack("ctypes_and_setuid", """
import os
def escaped():
    try:
        import ctypes
        ctypes.CDLL(None).setuid(0)
    except Exception:
        pass
    for call in (lambda: os.setuid(0), lambda: os.setgid(0), lambda: os.chroot("/")):
        try:
            call()
        except Exception:
            pass
    open("{usr_file}", "w").write("x")
    return True
""", evidence=_file_absent("usr_file")),
    Attack("exec_a_shell", """
import os, subprocess
def escaped():
    return subprocess.run(["/bin/sh", "-c", "echo hi"], capture_output=True).stdout == b"hi\\n"
"""),
    # Verdict forgery: each test below is false for a function that returns plain data (the same
    # each call), so only a trick passes it.
    Attack("equality_faking_object", """
class Yes:
    def __eq__(self, other):
        return True
    __hash__ = object.__hash__
def f(x):
    return Yes()
""", tests=("assert f(1) == 2 and f(1) == 3", "assert f(1) == [1] and f(1) == 'x'",
           "assert [f(1)] == [2] and [f(1)] == [3]",
            "r = f(1)\nassert r == 2 and r == 3")),
    Attack("eq_ne_bool_together", """
class Chameleon:
    flips = 0
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    def __bool__(self):
        Chameleon.flips += 1
        return Chameleon.flips % 2 == 1
    def __lt__(self, other):
        return True
    __gt__ = __le__ = __ge__ = __lt__
    def __contains__(self, item):
        return True
    __hash__ = object.__hash__
def f(x):
    return Chameleon()
""", tests=("assert f(0) == 1 and f(0) == 2", "assert not (f(0) != 1) and not (f(0) != 2)",
            "assert f(0) and not f(0)", "assert f(0) < 1 and f(0) > 1",
            "assert 5 in f(0) and f(0) is not None and f(0) == None",
            "assert f(0) in [1] and f(0) in [2]")),
    Attack("int_subclass", """
class Int(int):
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    __hash__ = int.__hash__
def f(x):
    return Int(7)
""", tests=("assert f(1) == 2 and f(1) == 3", "assert f(1) in [2] and f(1) in [3]", "assert f(1) == 7 and f(1) == 8")),
    Attack("str_subclass", """
class Str(str):
    def __eq__(self, other):
        return True
    __hash__ = str.__hash__
def f(x):
    return Str("nope")
""", tests=("assert f(1) == 'a' and f(1) == 'b'", "assert f(1) == 'nope' and f(1) == 'yes'")),
    Attack("list_subclass", """
class List(list):
    def __eq__(self, other):
        return True
    def __contains__(self, item):
        return True
    def __len__(self):
        return 3
def f(x):
    return List([9])
""", tests=("assert f(1) == [1] and f(1) == [2]", "assert 1 in f(1) and 2 in f(1)",
           "assert len(f(1)) == 3 and f(1) == [9, 9, 9]",
            "assert {'k': f(1)} == {'k': [1]} and f(1) == [2]")),
    Attack("shadowed_builtins", """
def abs(x):
    return 0
def sorted(x, **kw):
    return [3, 2, 1]
def len(x):
    return 3
def set(x=()):
    return {{1, 2}}
def round(x, n=0):
    return 1.5
def isinstance(x, t):
    return True
def f(x):
    return 100.0
def g():
    return [1, 2]
""", tests=("assert abs(f(1) - 0.5) < 1e-6", "assert sorted(g()) == [3, 2, 1]", "assert len(g()) == 3",
            "assert set(g()) == {1, 2} and set(g()) == {3}", "assert round(f(1), 1) == 1.5",
            "assert isinstance(f(1), str)",
            "r = f(1)\nassert abs(r - 0.5) < 1e-6")),
    Attack("patched_builtins_module", """
import builtins
builtins.abs = lambda x: 0
builtins.len = lambda x: 3
builtins.sorted = lambda x, **kw: [3, 2, 1]
builtins.isinstance = lambda *args: True
def f(x):
    builtins.abs = lambda x: 0  # again, while the test runs
    return 100.0
def g():
    return [1, 2]
""", tests=("assert abs(f(1) - 0.5) < 1e-6", "assert sorted(g()) == [3, 2, 1]", "assert len(g()) == 3",
            "assert isinstance(f(1), str)", "r = f(1)\nassert abs(r - 0.5) < 1e-6",
            "assert f(1) == 100.0 and abs(-5) == 0")),
    Attack("patched_stdlib_function", """
import math, operator
math.isclose = lambda *args, **kwargs: True
math.fabs = lambda x: 0.0
math.floor = lambda x: 7
operator.eq = lambda a, b: True
def f(x):
    math.isclose = lambda *args, **kwargs: True
    math.floor = lambda x: 100
    return 100.0
""", tests=("assert math.isclose(f(1), 0.5)", "assert math.isclose(f(1), 0.5, rel_tol=1e-9)",
            "assert math.fabs(f(1) - 0.5) < 1e-6", "assert math.floor(f(1)) == 7", "assert f(1) == math.floor(2.5)",
            "import math\nassert math.isclose(f(1), 0.5)", "assert operator.eq(f(1), 2)")),
    Attack("patch_the_serialisers", """
import marshal, binascii, builtins, sys
real_dumps = marshal.dumps
marshal.dumps = lambda value, *a: real_dumps(2)
binascii.b2a_base64 = lambda *a, **k: b"6QIAAAA="  # marshal.dumps(2)
builtins.bytes = type("bytes", (bytes,), {{"hex": lambda self, *a: real_dumps(2).hex()}})
builtins.type = lambda x: int
builtins.repr = lambda x: "2"
sys.modules["json"] = type(sys)("json")
def f(x):
    return 5
""", tests=("assert f(1) == 2", "assert f(1) == 2 and f(2) == 2")),
    Attack("patch_from_a_thread", """
import math, sys, threading, time
sys.setswitchinterval(1e-6)  # switch threads as often as possible: win the race after restore
def patch():
    while True:
        math.floor = lambda x: 7
        time.sleep(0)
threading.Thread(target=patch, daemon=True).start()
def f(x):
    return 100.0
""", tests=("assert math.floor(f(1)) == 7",) * 5),
    Attack("replace_what_the_harness_evaluates", """
import builtins
forged = compile("2", "<forged>", "eval")
builtins.enumerate = lambda code, start=0: iter([(0, forged)])
builtins.eval = lambda code, namespace=None: 2
builtins.exec = lambda code, namespace=None: None
builtins.str = lambda *args: "0"
def f(x):
    return 5
""", tests=("assert f(1) == 2", "assert f(1) == 2 and f(2) == 2", "x = f(1)\nassert x == 2")),
    Attack("forge_value_lines", """
import os, marshal
def f(x):
    forged = marshal.dumps(2).hex().encode()
    for fd in range(1, 64):
        for line in (b"value 0 0 = " + forged + b" 00", b"end 0 0.0 00", b"pass 0 0.0 00"):
            try:
                os.write(fd, line + b"\\n")
            except OSError:
                pass
    return 5
""", tests=("assert f(1) == 2",)),
    Attack("exit_while_values_are_sent", """
import os, sys, atexit
atexit.register(lambda: os._exit(0))
def f(x):
    return 2
def g(x):
    os._exit(0)
def h(x):
    sys.exit(0)
""", tests=("assert g(1) == 2", "assert f(1) == 3 or g(1)", "assert h(1) == 2", "assert not h(1)")),
    Attack("stdio_read_expected_output", """
import os, sys
found = ""
for root, dirs, files in os.walk("/"):
    if root.startswith(("/proc", "/sys", "/dev", "/usr", sys.base_prefix)):
        dirs[:] = []
        continue
    for name in files:
        try:
            text = open(os.path.join(root, name), errors="ignore").read()
        except OSError:
            continue
        if "expected-{marker}" in text:
            found = text
print(found.strip() or "nothing")
""", stdio=("give me the answer\n", "expected-{marker}\n")),
)


# Math responses whose ground truth is "3": each must cost at most the check's timeout.
ADVERSARIAL_MATH: dict[str, str] = {
    "exponent tower": "\\boxed{9^{9^{9^{9}}}}",
    "huge power": "\\boxed{10^{10^{10}}}",
    "factorial of a tower": "\\boxed{(2^{2^{2^{2^{2}}}})!}",
    "10k nested braces": "\\boxed{" + "{" * 10000 + "3" + "}" * 10000 + "}",
    "1 MB response": "blah " * 200_000 + "\\boxed{3}",
    "1 MB of braces, no box": "{" * 1_000_000,
    "no boxed answer": "I think it is three.",
    "unbalanced braces": "\\boxed{3 + \\frac{1}{2}",
}


PR_SET_CHILD_SUBREAPER = 36


@contextlib.contextmanager
def adopting_orphans() -> Iterator[None]:
    """While active, orphaned descendants of this process are re-parented to it (a child
    subreaper) instead of to the machine's init: whatever a sandbox leaves behind, alive or a
    zombie, stays visible to sandbox_leftovers(). Leftovers are killed and reaped at the end."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    if prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    try:
        yield
    finally:
        prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        for pid in sandbox_leftovers():
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
                os.waitpid(pid, 0)


def _status(pid: str) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").partition(":\t")[::2] for line in f)


def sandbox_leftovers() -> list[int]:
    """Descendants of this process, alive or zombie, in another PID namespace than ours: every
    process a sandbox started is in the sandbox's namespace, and none can leave it."""
    parents, depth = {}, {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            status = _status(entry)
            parents[int(entry)] = int(status["PPid"])
            depth[int(entry)] = len(status["NSpid"].split())
    me = os.getpid()
    ours = depth.get(me, 1)

    def descends(pid: int) -> bool:
        seen = set()
        while pid in parents and pid not in seen:
            seen.add(pid)
            pid = parents[pid]
            if pid == me:
                return True
        return False

    return sorted(pid for pid in parents if depth[pid] > ours and descends(pid))


@dataclass
class Verdict:
    name: str
    contained: bool
    detail: str
    reward: float
    wall_s: float


def run_attack(attack: Attack, reward_fn: Callable[[str, dict], dict], bait: HostBait) -> Verdict:
    response = f"```python\n{bait.fill(attack.program)}\n```"
    start = time.monotonic()
    result = reward_fn(response, attack.row(bait))
    wall = time.monotonic() - start
    problems = []
    if result["reward"] != 0 or result["correct"]:
        problems.append(f"scored {result['reward']}")
    if wall > MAX_WALL_S:
        problems.append(f"took {wall:.1f} s")
    if bait.secret in repr(result):
        problems.append("secret in the result")
    if sandbox_leftovers():
        problems.append(f"processes left: {sandbox_leftovers()}")
    evidence = attack.evidence(bait)
    if evidence:
        problems.append(evidence)
    return Verdict(attack.name, not problems, "; ".join(problems), result["reward"], wall)


def run_battery(reward_fn: Callable[[str, dict], dict], project_dir: Path,
                attacks: tuple[Attack, ...] = ATTACKS) -> tuple[list[Verdict], list[int]]:
    """The verdicts, and the sandbox processes left after the whole battery."""
    with HostBait(project_dir) as bait, adopting_orphans():
        verdicts = [run_attack(attack, reward_fn, bait) for attack in attacks]
        return verdicts, sandbox_leftovers()
