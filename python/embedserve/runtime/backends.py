"""Choose and open the runtime that runs a graph: ONNX Runtime (on the CPU or through IOBinding on
the GPU) or OpenVINO, behind one contract; a classifier's graph opens here too.

A backend has `provider` (a name for logs and /info), `input_names`, `hidden_size`, and
`run(input_ids, attention_mask, token_type_ids) -> float32 [batch, seq, hidden]`, callable from
several threads at once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from embedserve.precision import CUDA_BOUND, RUNTIMES, Precision
from embedserve.runtime.providers import cuda_device_present, resolve_providers
from embedserve.runtime.session import CPU, EncoderSession, SessionOptions

if TYPE_CHECKING:
    from embedserve.runtime.classifier import ClassifierSession

log = logging.getLogger(__name__)
# `auto` on a CPU, per precision, from `python -m bench peers` on the development machine
# (bench/NOTES.md §R2): the fastest runtime that holds the precision's fidelity floor.
CPU_DEFAULT_RUNTIME = {"fp32": "onnxruntime", "bf16": "openvino", "int8": "onnxruntime"}


class Backend(Protocol):
    provider: str
    input_names: list[str]
    hidden_size: int | None
    pooled: bool  # True when the graph pools (output [batch, hidden])

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray
    ) -> np.ndarray: ...


def check_here(providers: str | Sequence[str] | None) -> None:
    """What a model needs to run on this machine, checked while it is planned, before any graph
    is built for it, each a clear error then rather than after a compile: its providers (a GPU
    one needs a device here) and the environment variables its sessions read."""
    from embedserve.runtime.custom_ops import attention_kernel
    from embedserve.runtime.session import ort_log_level

    resolve_providers(providers)
    ort_log_level()
    attention_kernel()


def choose_runtime(
    runtime: str | None, precision: Precision, providers: str | Sequence[str] | None
) -> str:
    """The runtime to use: the one asked for (checked against the precision), or the default."""
    name = (runtime or "auto").lower()
    if name not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    wants_gpu = (
        providers not in (None, "auto") and resolve_providers(providers, here=False)[0] != CPU
    )
    if name == "auto":
        if wants_gpu or (providers in (None, "auto") and cuda_device_present()):
            name = "onnxruntime"
        else:
            name = CPU_DEFAULT_RUNTIME.get(precision.name, precision.runtimes[0])
            if name == "openvino" and not _openvino_importable():
                if "onnxruntime" not in precision.runtimes:
                    raise ValueError(_needs_openvino(precision))
                name = "onnxruntime"
    if name not in precision.runtimes:
        raise ValueError(
            f"precision {precision.name!r} runs on {precision.runtimes}, not on {name!r}"
        )
    if name == "openvino":
        if wants_gpu:
            raise ValueError(
                "runtime 'openvino' runs on the CPU; drop --providers or use runtime 'onnxruntime'"
            )
        if not _openvino_importable():
            raise ValueError(_needs_openvino(precision))
    return name


def open_backend(
    path: Path,
    precision: Precision,
    runtime: str,
    options: SessionOptions,
    *,
    max_sequence: int | None = None,
) -> Backend:
    """The session that runs an encoder's graph on `runtime` (`choose_runtime`'s answer, or
    CUDA_BOUND, where `max_sequence` caps the bucketed sequence length at the model's positions).
    """
    if runtime == CUDA_BOUND:
        from embedserve.runtime.cuda import BoundEncoderSession

        return BoundEncoderSession(path, options, max_sequence=max_sequence)
    if runtime == "openvino":
        from embedserve.runtime.openvino_session import OpenVINOSession, cpu_has_native_bf16

        hint = "f32"
        if precision.name == "bf16":
            if cpu_has_native_bf16():
                hint = "bf16"
            else:
                # Emulated bf16 would be slower than f32; run exact and say so once.
                log.warning("this CPU has no native bf16; precision 'bf16' runs in f32")
        return OpenVINOSession(path, inference_precision=hint, threads=options.intra_op_threads)
    return EncoderSession(path, options)


def open_classifier(path: Path, runtime: str, options: SessionOptions) -> ClassifierSession:
    """The session that runs a classifier's graph (ending in logits): ONNX Runtime's."""
    if runtime != "onnxruntime":
        raise ValueError(f"a classifier's graph runs on onnxruntime, not on {runtime!r}")
    from embedserve.runtime.classifier import ClassifierSession

    return ClassifierSession(path, options)


def _openvino_importable() -> bool:
    from embedserve.runtime.openvino_session import openvino_available

    return openvino_available()


def _needs_openvino(precision: Precision) -> str:
    return (
        f"precision {precision.name!r} needs the OpenVINO runtime: "
        "pip install 'embedserve[openvino]'"
    )
