"""Keep the memory a CPU training step frees, so that the next step can reuse it.

A training step allocates the same large tensors every time (activations, logits,
gradients) and frees them at its end. By default glibc's malloc hands a freed block of
more than a few MiB straight back to the kernel, so the next step's tensor of the same
size is fresh memory, and the kernel supplies fresh memory one 4 KiB page at a time,
each on a page fault the first time it is written. On a 2-core Xeon that was 55,000
page faults and about 50 ms of a 760 ms bf16 step (benchmarks/README.md). Two malloc
settings make freed blocks stay in the process instead, which is what the allocators
PyTorch recommends for CPUs (jemalloc, tcmalloc) do on their own.

The cost: memory a run has freed is not returned to the system until the process
ends (up to TRIM_THRESHOLD of it at the top of the heap). FOUNDRY_KEEP_FREED_MEMORY=0
keeps glibc's defaults.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt's parameter numbers, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap, where freed ones are reused, rather than
# from their own mapping, which is unmapped when freed. 32 MiB is the largest glibc
# accepts on a 64-bit system; larger tensors still get their own mapping.
MMAP_THRESHOLD = 32 << 20
# Free memory at the top of the heap is returned to the system only above this.
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory(env: dict[str, str] | None = None) -> bool:
    """Set glibc's malloc to keep freed blocks (see above); True if it did.

    Does nothing outside Linux, without glibc, or with FOUNDRY_KEEP_FREED_MEMORY=0.
    """
    raw = (os.environ if env is None else env).get("FOUNDRY_KEEP_FREED_MEMORY", "1")
    if raw.strip() not in ("1", "0"):
        raise ValueError(f"FOUNDRY_KEEP_FREED_MEMORY must be 0 or 1, got {raw!r}")
    if raw.strip() == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # another C library (musl): leave it alone
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # mallopt returns 1 on success; setting either value also stops glibc from
    # raising the mapping threshold on its own as blocks are freed
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
