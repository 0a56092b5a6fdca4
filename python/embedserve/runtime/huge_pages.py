"""Back the process's large anonymous memory, the models' weights among it, with 2 MiB pages.

ONNX Runtime prepacks each MatMul's weights into memory of its own allocator, on 4 KiB pages
unless the system makes every allocation huge (transparent huge pages set to `madvise`, as most
distributions ship, never does). After a pause between requests the weights have left the
caches, and the model run that follows most likely misses the TLB on each of the ~10,000 pages
of MiniLM's 42 MB as well: with 2 MiB pages, one text after a 50 ms pause took ~20 % less, and
resident memory did not change (+0.6 MB); but full batches ran ~3 % slower, so the server does it
only when asked (`--huge-pages`; bench/NOTES.md, "CPU between requests"). Linux only; elsewhere,
or where the kernel says no, nothing happens.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import sys
from pathlib import Path

log = logging.getLogger(__name__)

HUGE_PAGE = 2 << 20
NOTHING_MOVED = (
    "--huge-pages: no memory moved onto huge pages on %s (it needs Linux 6.1 or later, with "
    "transparent huge pages not 'never'); the model runs on small pages"
)
MADV_COLLAPSE = 25  # onto huge pages now, synchronously (Linux 6.1 and later)


def anonymous_spans(maps: str) -> list[tuple[int, int]]:
    """The 2 MiB-aligned [start, end) spans of the writable anonymous mappings in a
    /proc/PID/maps text that hold at least one whole huge page. ONNX Runtime's allocator maps
    each large block (a prepacked weight) on its own; the brk heap holds small objects only."""
    spans = []
    for line in maps.splitlines():
        fields = line.split()
        if len(fields) < 2 or "w" not in fields[1]:
            continue
        if len(fields) > 5:  # a file, the heap, a stack: not where the weights are
            continue
        low, high = (int(x, 16) for x in fields[0].split("-"))
        start = -(-low // HUGE_PAGE) * HUGE_PAGE
        end = high // HUGE_PAGE * HUGE_PAGE
        if end > start:
            spans.append((start, end))
    return spans


def back_with_huge_pages() -> int:
    """Collapse the process's large anonymous memory onto huge pages; returns the bytes
    collapsed. Call once the models are loaded: memory mapped later is not covered."""
    if not sys.platform.startswith("linux"):
        log.warning(NOTHING_MOVED, sys.platform)
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    collapsed = 0
    for start, end in anonymous_spans(Path("/proc/self/maps").read_text()):
        # Collapse only: MADV_HUGEPAGE would also make later page faults in these mappings
        # stall to compact memory for a huge page (the usual `madvise` defrag setting). A span
        # the kernel cannot collapse (partly unmapped, locked, a kernel before 6.1) stays on
        # small pages.
        if libc.madvise(start, end - start, MADV_COLLAPSE) == 0:
            collapsed += end - start
    if collapsed == 0:
        # Asked for and not done: a kernel before 6.1, or transparent huge pages "never".
        log.warning(NOTHING_MOVED, f"Linux {platform.release()}")
    log.debug("huge pages: %d MiB collapsed", collapsed >> 20)
    return collapsed
