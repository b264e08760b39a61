"""training.cpu_allocator: the tuned glibc thresholds keep a large freed block in the heap instead of unmapping it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dlf_torchrec.config import ConfigError, build_config
from dlf_torchrec.training.allocator import _libc

# Runs in a fresh interpreter so the test process keeps glibc's defaults. mallinfo2: hblkhd = bytes in mmapped
# blocks, arena = bytes in the main heap.
_PROBE = """
import ctypes, json, sys
import torch
from dlf_torchrec.training.allocator import configure_cpu_allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
applied = configure_cpu_allocator(sys.argv[1])
before = libc.mallinfo2()
x = torch.ones(64 * 2**20 // 4)  # 64 MiB, above glibc's largest dynamic mmap threshold (32 MiB)
during = libc.mallinfo2()
del x
after = libc.mallinfo2()
print(json.dumps({"applied": applied, "mmapped_delta": during.hblkhd - before.hblkhd,
                  "heap_delta_after_free": after.arena - before.arena}))
"""


def _probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(_libc() is None, reason="glibc only (mallopt/mallinfo2)")
def test_tuned_keeps_large_blocks_in_the_heap_default_mmaps_them() -> None:
    tuned, default = _probe("tuned"), _probe("default")
    assert tuned["applied"] is True and default["applied"] is False
    assert default["mmapped_delta"] >= 64 * 2**20  # glibc default: the tensor is its own mapping
    assert tuned["mmapped_delta"] == 0  # tuned: served from the heap ...
    assert tuned["heap_delta_after_free"] >= 64 * 2**20  # ... and kept there after free, ready for the next step


def test_config_rejects_unknown_allocator() -> None:
    assert build_config({}).training.cpu_allocator == "tuned"
    with pytest.raises(ConfigError, match="training.cpu_allocator"):
        build_config({"training": {"cpu_allocator": "jemalloc"}})
