"""copick_soup turns on torch's transparent huge pages for CPU tensors, unless the user opted out."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

KERNEL_THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
# Minor page faults while a fresh 64 MB tensor is first written: 16384 with 4 KB pages, ~32 with 2 MB ones.
CHILD = """
import copick_soup, resource, torch
t = torch.empty(64 << 20, dtype=torch.uint8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
t.fill_(1)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES_4K = (64 << 20) // 4096

MODE = KERNEL_THP.read_text() if KERNEL_THP.exists() else "[never]"  # e.g. "always [madvise] never"
# With "always" the kernel uses huge pages whatever torch asks, with "never" it never does: only under "madvise"
# does the setting decide.
pytestmark = pytest.mark.skipif("[madvise]" not in MODE, reason="kernel THP mode is not madvise")


def faults(**env) -> int:
    child_env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"} | env
    out = subprocess.run([sys.executable, "-c", CHILD], env=child_env, capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def test_importing_copick_soup_first_puts_torch_tensors_on_huge_pages():
    assert faults() < PAGES_4K // 8


def test_a_user_can_opt_out():
    assert faults(THP_MEM_ALLOC_ENABLE="0") > PAGES_4K * 0.9
