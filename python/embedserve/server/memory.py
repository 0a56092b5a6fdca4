"""Give memory freed by large request bodies back to the operating system.

glibc serves allocations above its mmap threshold with their own mappings, which `free` unmaps.
But the threshold is dynamic: each such block freed raises it to that block's size (up to 32 MiB),
so after one 2 MB body every later 2 MB buffer (bodies, joined chunks, decoded JSON) comes from
the heap, where freed memory fragments and stays in the process: 200 aborted 2 MB uploads left
~950 MB resident. Fixing the threshold turns the dynamic behaviour off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks of this size or more get their own mapping, returned to the system when freed.
MMAP_THRESHOLD = 256 * 1024
# Free heap top above this is returned to the system at once.
TRIM_THRESHOLD = 1024 * 1024


def return_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    if not ok:
        log.debug("mallopt refused the thresholds; freed memory may stay resident")
    return ok
