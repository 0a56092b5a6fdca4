"""Numeric precisions the engine runs in: one table, read by the engine, the CLI, tests and bench.

A precision says which ONNX graph to load (the fp32 graph, or an int8 or fp16 copy of it), which
runtimes can run it, and how close its vectors must stay to the fp32 reference (cosine over the
reference texts of every catalog model; asserted in tests). Adding one is one entry here plus
whatever makes its graph (models/variants.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

RUNTIMES = ("auto", "onnxruntime", "openvino")
# The runtime a model is planned on when it runs on CUDA through ONNX Runtime's IOBinding
# (runtime/cuda.py): never asked for by name, chosen by `loading` for kinds that take it.
CUDA_BOUND = "onnxruntime-cuda"


@dataclass(frozen=True)
class Precision:
    name: str
    # Which graph variant: "fp32" (compiled or shipped), "int8-static" (QDQ copy of it) or
    # "fp16" (a float16 copy of it).
    graph: str
    # Runtimes that run it, best first ("onnxruntime", "openvino").
    runtimes: tuple[str, ...]
    # Fidelity floors against the fp32 reference vectors: (min, mean) cosine over all texts.
    min_cosine: float
    mean_cosine: float
    # Padded tokens per model run on a CPU (bench/NOTES.md, per precision).
    cpu_batch_tokens: int
    description: str


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision(
            "fp32",
            "fp32",
            ("onnxruntime", "openvino"),
            0.99999,
            0.999995,
            1_024,
            "exact: float32 everywhere",
        ),
        # Measured with real bf16 (Xeon, AMX; OpenVINO 2026.4): min / mean cos 0.99997 / 0.99999
        # (all-MiniLM-L6-v2), 0.99983 / 0.99999 (all-mpnet-base-v2, whose worst text is an
        # outlier: the next is 0.99991). Where the CPU has no native bf16, OpenVINO runs f32
        # and the vectors are exact; tests hold that case to fp32's floor instead.
        Precision(
            "bf16",
            "fp32",
            ("openvino",),
            0.9997,
            0.99995,
            1_024,
            "near-exact: bfloat16 matrix products on CPUs with native bf16 (OpenVINO)",
        ),
        Precision(
            "int8",
            "int8-static",
            ("onnxruntime", "openvino"),
            0.985,
            0.99,
            1_024,
            "int8 weights and activations (static, calibrated); a check keeps the least quantizable MatMuls in fp32",
        ),
        Precision(
            "fp16",
            "fp16",
            ("onnxruntime",),
            0.9999,
            0.99999,
            1_024,
            "float16 weights and activations, norms and sums in float32: the CUDA default "
            "(on a CPU, ONNX Runtime computes most of it in float32)",
        ),
    )
}
# Not a precision but a rule choosing one: on CUDA a kind's GPU default, on a CPU
# `auto_precision` (loading.choose_precision decides between them); opt-in, the default stays
# fp32, which is exact everywhere.
AUTO = "auto"
# int8 is chosen where this CPU's int8 GEMM measures at least this much faster than its fp32
# one (runtime/int8_speed.py). The engine gains less than its GEMMs (the quantize and fp32 ops
# around them): a Zen 3 with a ~2.0x GEMM ran the engine 1.36-1.56x, a Sapphire Rapids Xeon
# (VNNI, ~4.8x) 1.84x; a Broadwell Xeon (AVX2, no VNNI; int8 GEMM about its fp32 rate) 0.97x.
INT8_MIN_SPEEDUP = 1.5


def auto_precision(int8_speedup: float, allowed: Iterable[str] = ("fp32", "int8")) -> str:
    """What precision="auto" runs on a CPU whose int8 GEMM is `int8_speedup` times as fast as
    its fp32 one: int8 from INT8_MIN_SPEEDUP on (where the kind of model runs int8), else fp32."""
    if "int8" in allowed and int8_speedup >= INT8_MIN_SPEEDUP:
        return "int8"
    return "fp32"


def this_cpus_precision(allowed: Iterable[str] = ("fp32", "int8")) -> str:
    """`auto_precision` on this CPU: its speedup measured once and cached (only if int8 is
    allowed at all)."""
    allowed = tuple(allowed)
    if "int8" not in allowed:
        return "fp32"
    from embedserve.runtime.int8_speed import int8_speedup

    return auto_precision(int8_speedup(), allowed)


# Older spelling: Engine.from_pretrained(quantize="int8").
QUANTIZE_ALIASES = {"int8": "int8"}


def get_precision(name: str | None) -> Precision:
    """The table entry for `name` (None means fp32, "auto" this CPU's `auto_precision`: the CPU's
    rule alone; what a model will run at, GPU or not, is loading.choose_precision's), or a
    ValueError naming the choices."""
    key = "fp32" if name is None else str(name).lower()
    if key == AUTO:
        key = this_cpus_precision()
    if key not in PRECISIONS:
        raise ValueError(f"precision must be one of {[*sorted(PRECISIONS), AUTO]}, got {name!r}")
    return PRECISIONS[key]


def resolve_precision(precision: str | None, quantize: str | None) -> Precision:
    """`precision` and the older `quantize` argument reconciled into one entry."""
    if quantize is not None:
        if quantize not in QUANTIZE_ALIASES:
            raise ValueError(
                f"quantize must be one of {sorted(QUANTIZE_ALIASES)} or None, got {quantize!r}"
            )
        alias = QUANTIZE_ALIASES[quantize]
        if precision is not None and get_precision(precision).name != alias:
            raise ValueError(f"quantize={quantize!r} contradicts precision={precision!r}")
        return get_precision(alias)
    return get_precision(precision)
