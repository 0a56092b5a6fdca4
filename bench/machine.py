"""One line saying where a benchmark ran, for RESULTS.md."""

from __future__ import annotations

import datetime
import os
import platform
import sys


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe_machine() -> str:
    import onnxruntime
    from embedserve.runtime.custom_ops import kernel_isa

    return (
        f"{datetime.date.today()} | {cpu_model()} | {os.cpu_count()} cores | "
        f"Python {platform.python_version()} | onnxruntime {onnxruntime.__version__} | "
        f"embedserve kernels: {kernel_isa() or 'not built'} | command: {' '.join(sys.argv)}"
    )
