"""What loading any model shares, embedder or cross-encoder: where its files are, what it is
called, the precision and runtime it runs at, and the session options. `Engine.from_pretrained`
and `Reranker.from_pretrained` each build their own session from this plan."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from embedserve.models import find_entry, resolve_model_dir
from embedserve.precision import Precision, resolve_precision
from embedserve.runtime import SessionOptions
from embedserve.runtime.backends import choose_runtime
from embedserve.runtime.cuda import on_gpu

# What `runtime` is on the CUDA path: ONNX Runtime with IOBinding (runtime/cuda.py).
CUDA_BOUND = "onnxruntime-cuda"


@dataclass(frozen=True)
class LoadPlan:
    model_dir: Path  # the graph or safetensors
    config_dir: Path  # config.json and tokenizer.json: the model's own, or `tokenizer`'s folder
    name: str
    precision: Precision
    runtime: str  # a runtime name (backends.RUNTIMES), or CUDA_BOUND
    options: SessionOptions


def plan_load(
    spec: str | os.PathLike[str],
    *,
    tokenizer: str | os.PathLike[str] | None,
    name: str | None,
    compile: bool,
    providers: str | list[str] | None,
    intra_op_threads: int | None,
    inter_op_threads: int | None,
    precision: str | None,
    quantize: str | None,
    runtime: str | None,
    cuda_precision: str | None = None,
) -> LoadPlan:
    """Resolve `spec` (a folder, a catalog name or a hub repo id; downloaded or compiled on first
    use) and choose how to run it.

    On CUDA, when the runtime asked for is ONNX Runtime's (or left to choose), the model runs
    through IOBinding at `cuda_precision` unless a precision is given; elsewhere the runtime is
    the one asked for, or the faster one for the precision on this machine.
    """
    bound = cuda_precision is not None and (
        on_gpu(providers) and runtime in (None, "auto", "onnxruntime")
    )
    if bound:
        chosen = resolve_precision(precision or (None if quantize else cuda_precision), quantize)
        runtime_name = CUDA_BOUND
    else:
        chosen = resolve_precision(precision, quantize)
        runtime_name = choose_runtime(runtime, chosen, providers)
    model_dir = resolve_model_dir(spec, compile=compile)
    config_dir = resolve_model_dir(tokenizer) if tokenizer is not None else model_dir
    return LoadPlan(
        model_dir=model_dir,
        config_dir=config_dir,
        name=name or display_name(spec, model_dir),
        precision=chosen,
        runtime=runtime_name,
        options=SessionOptions(providers, intra_op_threads, inter_op_threads),
    )


def display_name(spec: str | os.PathLike[str], model_dir: Path) -> str:
    """The catalog's name for `spec`, a folder's own name, or the spec as given (a repo id)."""
    entry = find_entry(str(spec))
    if entry is not None:
        return entry.name
    return model_dir.name if Path(spec).expanduser().is_dir() else str(spec)
