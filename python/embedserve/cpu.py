"""What this CPU is: its model name and instruction-set flags, read once from /proc/cpuinfo.

Two readers, both keys of something kept on disk: `runtime.int8_speed` (the measured int8
speedup that precision="auto" decides by) and the disk result cache (ONNX Runtime picks kernels
by instruction set, so its vectors are exact only on a CPU with the same flags).
"""

from __future__ import annotations

import functools
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
