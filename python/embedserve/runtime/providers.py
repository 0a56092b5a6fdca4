"""Pick ONNX Runtime execution providers: CUDA when it really works here, else CPU."""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence

import onnxruntime as ort

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
ALIASES = {"cpu": CPU, "cuda": CUDA, "gpu": CUDA}
# Providers that run on a CUDA device, and need one.
GPU_PROVIDERS = (CUDA, "TensorrtExecutionProvider")


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


def resolve_providers(requested: str | Sequence[str] | None, *, here: bool = True) -> list[str]:
    """Providers to try, in order. `None`/"auto": CUDA if a device is present, then CPU.

    Names are `ALIASES` or ONNX Runtime's provider names, in any case. A GPU provider asked for
    by name where no device is present is refused when the model is to run `here`: ONNX Runtime
    would log errors, fall back to the CPU on its own, and the model would run the graph planned
    for the GPU (fp16) there. `here=False` plans for a machine of those providers, perhaps
    another (an embed-file driver choosing the precision its Ray GPU actors run)."""
    if requested is None or (isinstance(requested, str) and requested.lower() == "auto"):
        return [CUDA, CPU] if cuda_device_present() else [CPU]
    names = [requested] if isinstance(requested, str) else list(requested)
    available = ort.get_available_providers()
    by_lower = {p.lower(): p for p in available}
    resolved = [ALIASES.get(name.lower(), by_lower.get(name.lower(), name)) for name in names]
    unknown = [p for p in resolved if p not in available]
    if unknown:
        raise ValueError(
            f"providers: {unknown} not known here; use auto, cpu, cuda (or gpu), or a provider "
            f"this onnxruntime has: {', '.join(available)}"
        )
    on_gpu = [name for name, p in zip(names, resolved) if p in GPU_PROVIDERS]
    if on_gpu and here and not cuda_device_present():
        raise ValueError(
            f"providers: {on_gpu} asked for, but this machine has no CUDA device (the CUDA "
            "driver reports none); use cpu, or auto (CUDA where a GPU is present, else the CPU)"
        )
    if CPU not in resolved:
        resolved.append(CPU)
    return resolved
