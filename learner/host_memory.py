"""Host memory of a CPU learner: hand multi-MB frees back to the OS.

glibc raises its mmap threshold (up to 32 MiB) each time it frees a large mmapped block, after which
multi-MB temporaries come from the heap. The CPU attention path allocates such temporaries per query
chunk (models/slot_mask.py) with small long-lived tensors (chunk outputs, autograd state) in between,
so freed holes are split and the heap keeps growing: one policy step on an 8k-token response
measured 2.4 GB peak RSS of which most was freed memory glibc kept (4k: 980 MB vs 617 MB with a
fixed threshold). A fixed threshold maps every block of at least `threshold` bytes on its own and
unmaps it on free.

The threshold is 8 MiB, not lower: each mapped block is fresh pages the kernel must fault in and
zero, which dominates ops on narrow models. At 1 MiB the default job's policy step (activations of
~8 MB) took 3.6 s instead of 2.3 s; at 8 MiB the 8k-token step's peak stays 913 MB (32 MiB: 1,099 MB).
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def return_large_frees(threshold: int = 8 << 20) -> bool:
    """Fix glibc's mmap threshold for this process; False where the C library has no mallopt."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    return bool(mallopt and mallopt(M_MMAP_THRESHOLD, threshold))
