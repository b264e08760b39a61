"""glibc malloc settings for CPU training (``training.cpu_allocator``).

PyTorch's CPU tensors come straight from glibc ``malloc``. Under glibc's defaults every allocation above the
dynamic mmap threshold (at most 32 MiB) gets fresh pages from the kernel and gives them back on free, so a training
step whose activations are hundreds of MiB (DLF at batch 4096: attention inputs, [B, n, r] interaction maps)
page-faults much of its working set in again on every step. ``tuned`` keeps large blocks in the heap (mmap and trim
thresholds raised to 2 GiB), so the memory is faulted in once and reused. Measured on this 2-core machine
(``benchmarks/results/allocator.md``, full model through TorchRec at batch 4096, Frappe configs): DNN 1.18x,
DCNv2 1.10x, DLF authors 1.09x, DLF authors + NAF 1.22x samples/s, minor page faults per step 4-24x fewer; DLF paper
form and TF4CTR unchanged (0.98x, 1.01x, within noise). The cost: freed memory stays in the process instead of going
back to the OS, so RSS stays near the run's peak (peak RSS within -4% .. +9% of glibc's default in that table).

This is what jemalloc/tcmalloc preloading achieves, without a native dependency. The setting is process-wide and
inherited by forked DataLoader workers; it is a no-op where glibc is absent (macOS, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Literal

CpuAllocator = Literal["tuned", "default"]

# mallopt(3) parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
TUNED_THRESHOLD_BYTES = 2**31 - 1  # mallopt takes an int


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def configure_cpu_allocator(mode: CpuAllocator) -> bool:
    """Apply ``mode`` to this process's glibc malloc; True if the tuned thresholds are now in effect.

    ``default`` leaves glibc untouched (returns False); ``tuned`` returns False without glibc.
    """
    if mode == "default":
        return False
    if mode != "tuned":
        raise ValueError(f"cpu_allocator: expected 'tuned' or 'default', got {mode!r}")
    libc = _libc()
    if libc is None:
        return False
    ok_mmap = libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(TUNED_THRESHOLD_BYTES))
    ok_trim = libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(TUNED_THRESHOLD_BYTES))
    return bool(ok_mmap and ok_trim)
