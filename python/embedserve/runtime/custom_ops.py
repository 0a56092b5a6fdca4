"""embedserve's ONNX Runtime custom ops (csrc/ortops): which fused attention a CPU session runs.

The library is a plain shared object built beside `_core` (it links neither Python nor ONNX
Runtime); ONNX Runtime loads it into each session that registers it. Where it was not built
(a compiler without GCC vector extensions) or `EMBEDSERVE_ATTENTION_KERNEL=onnxruntime` asks for
it, sessions run ONNX Runtime's own MultiHeadAttention instead: the same inputs, the same math.
"""

from __future__ import annotations

import ctypes
import os
from functools import cache
from pathlib import Path

import onnxruntime as ort

from embedserve.models.fused_attention import MULTI_HEAD, PADDED, AttentionOp

KERNEL_VARIABLE = "EMBEDSERVE_ATTENTION_KERNEL"
KERNELS = ("embedserve", "onnxruntime")


@cache  # where the package is installed does not change while it runs
def library() -> Path | None:
    """The custom-op library installed with the package, if it was built."""
    package = Path(__file__).resolve().parent.parent
    return next(iter(sorted(package.glob("_ortops.*"))), None)


@cache  # the library decides once per process (csrc/simd.cpp)
def kernel_isa() -> str | None:
    """The instruction set embedserve's kernels run with on this CPU: "avx512", "avx2", "avx"
    or "baseline" (`EMBEDSERVE_KERNEL_ISA` caps it); None where the library was not built."""
    path = library()
    if path is None:
        return None
    report = ctypes.CDLL(str(path)).EmbedserveKernelIsa
    report.restype = ctypes.c_char_p
    return report().decode()


def register_library(options: ort.SessionOptions) -> None:
    """Register embedserve's custom ops on `options` (nothing where the library was not built)."""
    path = library()
    if path is not None:
        options.register_custom_ops_library(str(path))


def attention_kernel() -> str:
    """The attention kernel CPU sessions use: `EMBEDSERVE_ATTENTION_KERNEL`, else embedserve's."""
    # Empty is unset, as for every EMBEDSERVE_ setting (settings.setting_value).
    kernel = os.environ.get(KERNEL_VARIABLE, "").strip().lower() or "embedserve"
    if kernel not in KERNELS:
        raise ValueError(f"{KERNEL_VARIABLE}={kernel!r}: expected one of {', '.join(KERNELS)}")
    return kernel


def attention_op(options: ort.SessionOptions) -> AttentionOp:
    """The fused attention op a CPU session with `options` runs; registers embedserve's library
    on `options` when that op is ours."""
    if library() is None or attention_kernel() == "onnxruntime":
        return MULTI_HEAD
    register_library(options)
    return PADDED
