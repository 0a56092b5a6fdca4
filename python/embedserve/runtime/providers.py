"""Pick ONNX Runtime execution providers: CUDA when it really works here, else CPU."""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence

import onnxruntime as ort

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
ALIASES = {"cpu": CPU, "cuda": CUDA, "gpu": CUDA}


@functools.cache
def cuda_device_present() -> bool:
    """A CUDA driver with at least one device, asked quietly through libcuda itself.

    onnxruntime-gpu lists CUDAExecutionProvider even on machines without a GPU and then logs
    errors when a session tries it; asking the driver first keeps CPU machines silent.
    """
    if CUDA not in ort.get_available_providers():
        return False
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    if libcuda.cuInit(0) != 0 or libcuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return False
    if count.value > 0 and hasattr(ort, "preload_dlls"):
        # CUDA and cuDNN from the nvidia-* pip packages, where no system CUDA is installed.
        ort.preload_dlls()
    return count.value > 0


def resolve_providers(requested: str | Sequence[str] | None) -> list[str]:
    """Providers to try, in order. `None`/"auto": CUDA if a device is present, then CPU."""
    if requested is None or requested == "auto":
        return [CUDA, CPU] if cuda_device_present() else [CPU]
    names = [requested] if isinstance(requested, str) else list(requested)
    resolved = [ALIASES.get(name.lower(), name) for name in names]
    unknown = [p for p in resolved if p not in ort.get_available_providers()]
    if unknown:
        raise ValueError(
            f"execution provider(s) {unknown} are not available in this onnxruntime "
            f"(available: {ort.get_available_providers()})"
        )
    if CPU not in resolved:
        resolved.append(CPU)
    return resolved
