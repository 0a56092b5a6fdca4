"""What this CPU is: its model name and instruction-set flags, read once from /proc/cpuinfo.

Two readers, both keys of something kept on disk: `runtime.int8_speed` (the measured int8
speedup that precision="auto" decides by) and the disk result cache (ONNX Runtime picks kernels
by instruction set, so its vectors are exact only on a CPU with the same flags).
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """The first processor's model name and flags in a /proc/cpuinfo text."""
    model, flags = "", frozenset[str]()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        name = name.strip()
        if name == "model name" and not model:
            model = value.strip()
        elif name in ("flags", "Features") and not flags:  # x86, then ARM's spelling
            flags = frozenset(value.split())
    return model, flags


@functools.cache
def cpu_info() -> tuple[str, frozenset[str]]:
    """This machine's (model name, flags); the architecture and no flags where /proc is absent."""
    try:
        model, flags = parse_cpuinfo(CPUINFO.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        model, flags = "", frozenset()
    return model or platform.processor() or platform.machine(), flags


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# Model threads past this many per usable CPU only take turns on them, spinning as they wait:
# on 2 CPUs, 256 intra-op threads ran one text in 20 s and 100,000 never finished starting.
THREADS_PER_CPU = 4


def max_model_threads() -> int:
    """The most ONNX Runtime threads (intra- or inter-op) a model may be given here."""
    return THREADS_PER_CPU * usable_cpus()
