"""labelfield.allocator: a large buffer freed and allocated again is reused, not page-faulted afresh."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Run in a fresh interpreter, as the CLI is: the heap of a long pytest process is fragmented by earlier tests.
_PROBE = """
import resource, sys, torch
from labelfield.allocator import keep_large_blocks
ok = keep_large_blocks()
n = 16 << 20  # 64 MB of float32: above glibc's default mmap threshold (32 MB at most)
# First uses: the heap grows to hold the block. Small allocations in between can leave the freed block a few
# bytes short of the next 64-byte-aligned request, so the heap may grow a few more times before it settles.
for _ in range(16):
    torch.empty(n).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    torch.empty(n).fill_(1.0)  # allocated and freed at once, as a step's table gradient is
print(int(ok), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(env: dict[str, str]) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE], env={**os.environ, **env}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    ok, faults = out.stdout.split()
    return ok == "1", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_large_buffer_reused_without_page_faults():
    ok, faults = _faults({})
    if not ok:
        pytest.skip("this C library has no mallopt")
    assert faults < 1000, faults  # reused from the heap
    off, faults_off = _faults({"LABELFIELD_MALLOPT": "0"})
    assert not off and faults_off > 10 * max(faults, 100), faults_off  # a fresh mmap faults ~16k pages each time
