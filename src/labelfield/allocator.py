"""Keep large freed blocks in the process heap instead of handing them back to the kernel (glibc only).

Why: glibc serves every allocation above its mmap threshold (at most 32 MB by default) with a fresh `mmap` and
returns it with `munmap` when freed. A training step allocates the hash table's gradient (~56 MB at T = 2^19)
and frees it at `zero_grad(set_to_none=True)`, so every step page-faults 56 MB of new, kernel-zeroed pages:
~8k minor faults and 10-30 ms of a ~110 ms step on a 2-core machine, with no work done. The rendered frames'
packed-sample buffers (tens of MB) pay the same. Raising the mmap and trim thresholds makes glibc reuse those
blocks from its heap. Cost: the resident size stays at its peak instead of shrinking between steps, and that peak
can hold a few copies of a large block: torch asks for 64-byte-aligned blocks, a freed block hemmed in by small
allocations is then a few bytes short of the next request, and the heap grows until freed blocks coalesce (up to
~8 copies of a 64 MB block in tests/test_allocator.py before it settles; a few hundred MB, not a leak).

`keep_large_blocks()` is idempotent and a no-op on other C libraries / platforms, or with $LABELFIELD_MALLOPT=0.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30  # 1 GiB: any single buffer of ours is below it
_done: list[bool] = []


def keep_large_blocks() -> bool:
    """Raise glibc's mmap and trim thresholds once per process. Returns whether they are raised."""
    if _done:
        return _done[0]
    ok = False
    if sys.platform.startswith("linux") and os.environ.get("LABELFIELD_MALLOPT", "1") != "0":
        try:
            libc = ctypes.CDLL("libc.so.6")
            ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _THRESHOLD))
        except (OSError, AttributeError):  # musl or another libc without mallopt
            ok = False
    _done.append(ok)
    return ok
