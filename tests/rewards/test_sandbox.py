"""The sandbox itself, below the reward layer: isolation, limits, privileges and clean-up."""
import ast
import os
import resource

import pytest

from rewards import Limits, Sandbox
from rewards.sandbox import compiled_harness
from rewards.userns import SANDBOX_UID

KEY = "00" * 32


DEFAULT_LIMITS = Limits()


def run(sandbox: Sandbox, program: str, limits: Limits = DEFAULT_LIMITS, timeout: float = 10.0):
    return sandbox.run({"mode": "stdio", "program": program, "key": KEY}, b"", limits, timeout=timeout)


def survivors(run_id: str) -> list[int]:
    """Host processes whose command line carries this run's id (every sandboxed process does)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if run_id.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            pass
    return found


def test_backend_is_a_real_sandbox(sandbox):
    print(f"sandbox backend: {sandbox.backend}")
    assert sandbox.backend in ("bwrap", "unshare")


def test_filesystem_environment_and_identity(sandbox):
    program = """
import os
print(sorted(os.listdir("/")))
print(os.listdir("/tmp"))
print(sorted(os.environ))
print([os.getuid(), os.getgid()])
print(sorted(p for p in os.listdir("/proc") if p.isdigit()))
wrote = []
for path in ("/usr/x", "/x", "/harness.py"):
    try:
        open(path, "w")
        wrote.append(path)
    except OSError:
        pass
print(wrote)
regained = []
for name, call in (("setuid", lambda: os.setresuid(0, 0, 0)), ("chroot", lambda: os.chroot("/tmp"))):
    try:
        call()
        regained.append(name)
    except OSError:
        pass
print(regained)
"""
    result = run(sandbox, program)
    assert result.returncode == 0, result.stderr
    root, tmp, env, ids, pids, wrote, regained = map(ast.literal_eval, result.stdout.decode().splitlines())
    assert not {"home", "work", "etc", "var", "opt", "mnt"} & set(root)
    assert tmp == []  # private, empty: not the host's /tmp
    assert set(env) <= {"LANG", "PATH", "PWD"}  # none of the caller's variables
    assert len(pids) <= 3  # a fresh PID namespace: no host process is visible
    assert wrote == [] and regained == []
    if os.geteuid() == 0:
        assert ids == [SANDBOX_UID, SANDBOX_UID]  # dropped from host root to nobody


def test_rlimits_are_applied(sandbox):
    limits = Limits(cpu_s=3, memory_mb=256, nproc=8, fsize_mb=2, nofile=32)
    program = "import resource\nfor n in ('CPU', 'AS', 'NPROC', 'FSIZE', 'NOFILE'):\n" \
              "    print(resource.getrlimit(getattr(resource, 'RLIMIT_' + n))[0])"
    result = run(sandbox, program, limits)
    assert result.stdout.decode().split() == ["3", str(256 << 20), "8", str(2 << 20), "32"]


def test_process_limit_holds_even_for_root(sandbox):
    """RLIMIT_NPROC is not enforced for host root; the sandbox must still cap processes."""
    program = """
import os, time
made = 0
for _ in range(100):
    try:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        made += 1
    except OSError:
        break
print(made)
"""
    result = run(sandbox, program, Limits(nproc=10))
    assert int(result.stdout) < 10
    assert not survivors(result.run_id)


def test_memory_limit_fails_fast(sandbox):
    result = run(sandbox, "b = bytearray(4 << 30)", Limits(memory_mb=512))
    assert result.returncode != 0 and b"MemoryError" in result.stderr
    assert result.wall_s < 5


def test_timeout_kills_the_whole_tree(sandbox):
    program = """
import os, time
for _ in range(3):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(1000)
        os._exit(0)
print("forked", flush=True)
time.sleep(1000)
"""
    result = run(sandbox, program, timeout=1.5)
    assert result.killed == "timeout" and result.stdout == b"forked\n"
    assert 1.4 < result.wall_s < 4
    assert not survivors(result.run_id)


def test_output_is_capped_and_the_run_cut_off(sandbox):
    program = "import sys\nchunk = 'x' * (1 << 20)\nwhile True:\n    sys.stdout.write(chunk)"
    result = run(sandbox, program, Limits(output_bytes=1 << 20), timeout=20)
    assert result.killed == "output_limit"
    assert len(result.stdout) <= 1 << 20
    assert result.wall_s < 5
    assert not survivors(result.run_id)


def test_host_rlimits_are_untouched(sandbox):
    before = resource.getrlimit(resource.RLIMIT_NPROC)
    run(sandbox, "pass", Limits(nproc=4))
    assert resource.getrlimit(resource.RLIMIT_NPROC) == before


def test_unshare_fallback_backend(sandbox):
    fallback = Sandbox("unshare")
    result = run(fallback, "import os\nprint(sorted(os.listdir('/')), os.listdir('/tmp'))")
    assert fallback.backend == "unshare" and result.returncode == 0, result.stderr
    root, tmp = result.stdout.decode().split("] ")
    assert "home" not in root and "work" not in root and tmp.strip() == "[]"


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend"):
        Sandbox("docker")


def test_compiled_harness_is_rebuilt_when_tmp_is_cleaned(sandbox):
    os.remove(compiled_harness())
    assert run(sandbox, "print('ok')").stdout == b"ok\n"


@pytest.mark.parametrize("backend", ["bwrap", "unshare"])
def test_a_stderr_flood_is_cut_off_at_once(sandbox, backend):
    """unshare (util-linux 2.38) writes a line to its stderr when its child is killed: with that
    pipe full and unread, the launcher blocked and every such kill waited 10 s for it."""
    program = "import sys\nwhile True:\n    sys.stderr.write('x' * (1 << 20))"
    result = run(Sandbox(backend), program, Limits(output_bytes=1 << 20), timeout=20)
    assert result.killed == "output_limit"
    assert len(result.stderr) <= 1 << 20
    assert result.wall_s < 5
    assert not survivors(result.run_id)
