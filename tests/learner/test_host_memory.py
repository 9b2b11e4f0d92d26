"""A CPU learner hands freed multi-MB blocks back to the OS (learner/host_memory.py): glibc's
adaptive threshold would keep them in the heap under a later small allocation."""
import pytest
import torch

from learner.host_memory import return_large_frees


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def test_a_freed_block_under_a_live_small_one_leaves_resident_memory():
    if not return_large_frees():
        pytest.skip("no glibc mallopt here")
    torch.ones(15 << 19).sum()  # a freed 30 MB block: glibc's own threshold would now be 30 MB
    block = torch.ones(4 << 20)  # 16 MB
    keep = torch.ones(1 << 14)  # allocated after it, still live: the heap could not shrink past it
    before = rss_mb()
    del block
    assert before - rss_mb() >= 15
    assert keep.sum() == 1 << 14
