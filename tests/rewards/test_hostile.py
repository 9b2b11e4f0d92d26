"""Every hostile program ends within its limit, is contained, scores 0 and leaves nothing behind,
on both sandbox backends."""
import os
import signal
import subprocess
import time

import pytest

from rewards import CodeReward
from tests.rewards.hostile_programs import (
    ATTACKS,
    HostBait,
    adopting_orphans,
    run_attack,
    sandbox_leftovers,
)

BACKENDS = ("bwrap", "unshare")


@pytest.fixture(scope="module")
def bait(project_dir, sandbox):
    with HostBait(project_dir) as bait, adopting_orphans():
        yield bait


def test_battery_is_large_enough():
    assert len(ATTACKS) >= 30


def test_leftover_check_sees_an_orphaned_namespace(bait):
    """The check must be able to fail: a PID namespace whose parent was killed is found."""
    launcher = subprocess.Popen(["unshare", "--user", "--map-root-user", "--pid", "--fork", "--", "sleep", "30"])
    time.sleep(0.3)
    launcher.kill()
    launcher.wait()
    deadline = time.monotonic() + 5
    while not sandbox_leftovers() and time.monotonic() < deadline:
        time.sleep(0.05)
    left = sandbox_leftovers()
    assert left
    for pid in left:  # adopted by us: ours to reap
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert sandbox_leftovers() == []


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_contained(bait, attack, backend):
    verdict = run_attack(attack, CodeReward(default_time_limit=1.0, backend=backend), bait)
    assert verdict.contained, verdict.detail


def test_no_sandbox_process_survives_the_battery(bait):
    assert sandbox_leftovers() == []
