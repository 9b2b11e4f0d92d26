"""Every hostile program ends within its limit, is contained, scores 0 and leaves nothing behind."""
import pytest

from rewards import CodeReward
from tests.rewards.hostile import ATTACKS, HostBait, run_attack, sandbox_processes

UNSHARE_SUBSET = ("tcp_connect_host_server", "write_project_checkout", "read_home_secret",
                  "sleep_forever_with_daemon_child", "fork_bomb", "list_host_processes")


@pytest.fixture(scope="module")
def bait(project_dir):
    with HostBait(project_dir) as bait:
        yield bait


def test_battery_is_large_enough():
    assert len(ATTACKS) >= 20


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_contained(code_reward, bait, attack):
    verdict = run_attack(attack, code_reward, bait)
    assert verdict.contained, verdict.detail


@pytest.mark.parametrize("name", UNSHARE_SUBSET)
def test_attack_is_contained_by_the_unshare_fallback(code_reward, bait, name):
    attack = next(a for a in ATTACKS if a.name == name)
    verdict = run_attack(attack, CodeReward(default_time_limit=1.0, backend="unshare"), bait)
    assert verdict.contained, verdict.detail


def test_no_sandbox_process_survives_the_battery(code_reward):
    assert sandbox_processes() == []
