"""How much faster this CPU multiplies in int8 than in fp32, measured with ONNX Runtime's own
GEMMs on an encoder's feed-forward shape: what `precision="auto"` decides by
(`precision.auto_precision`).

Measured rather than read off the instruction-set flags: int8 ran 0.97x fp32 on a Broadwell Xeon
and 1.36-1.56x on a Zen 3 EPYC, both AVX2 without VNNI (bench/RESULTS.md, "Wave 14"). The
answer is measured once per CPU and ONNX Runtime version and kept in the user cache, so a
process, a server restart and an `embed-file` resume on the same machine all choose alike.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from embedserve.cpu import cpu_info
from embedserve.models.cache import cache_root

# all-MiniLM-L6-v2's feed-forward GEMM at the engine's bulk budget: small enough to time in
# ~0.2 s, large enough for ONNX Runtime's blocked kernels.
ROWS, HIDDEN, FFN = 256, 384, 1536
ROUNDS, CALLS = 5, 4
MEASURE_VERSION = 1  # part of the cache key: a new way of measuring measures again


def feed_forward_matmul(
    int8: bool, rows: int | str = ROWS, hidden: int = HIDDEN, ffn: int = FFN
) -> onnx.ModelProto:
    """One MatMul of an encoder's feed-forward shape, [rows, hidden] x [hidden, ffn] (`rows` may
    be a symbolic name), fp32 or ONNX's MatMulInteger (u8 x 7-bit s8, as the int8 graphs)."""
    rng = np.random.default_rng(0)
    if int8:
        weight = rng.integers(-64, 64, (hidden, ffn), dtype=np.int8)
        node = helper.make_node("MatMulInteger", ["x", "w"], ["y"])
        x_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        weight = rng.standard_normal((hidden, ffn)).astype(np.float32)
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        x_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "gemm",
        [helper.make_tensor_value_info("x", x_type, [rows, hidden])],
        [helper.make_tensor_value_info("y", y_type, [rows, ffn])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _matmul_session(int8: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # a per-core rate: the ratio is what matters
    return ort.InferenceSession(
        feed_forward_matmul(int8).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def measure_int8_speedup() -> float:
    """fp32 GEMM time over int8 GEMM time, alternated rounds, median (about 0.2 s)."""
    sessions = {int8: _matmul_session(int8) for int8 in (False, True)}
    rng = np.random.default_rng(1)
    feeds = {
        False: {"x": rng.standard_normal((ROWS, HIDDEN)).astype(np.float32)},
        True: {"x": rng.integers(0, 256, (ROWS, HIDDEN), dtype=np.uint8)},
    }
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(ROUNDS + 1):  # the first round warms both up and is not counted
        for int8, session in sessions.items():
            start = time.perf_counter()
            for _ in range(CALLS):
                session.run(None, feeds[int8])
            seconds[int8].append(time.perf_counter() - start)
    return statistics.median(seconds[False][1:]) / statistics.median(seconds[True][1:])


def _cache_file() -> Path:
    model, flags = cpu_info()
    key = json.dumps([model, sorted(flags), ort.__version__, MEASURE_VERSION])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root() / "cpu" / f"int8-speedup-{digest}.json"


@functools.cache
def int8_speedup() -> float:
    """This CPU's int8 GEMM speedup over fp32: from the user cache, else measured and kept."""
    path = _cache_file()
    try:
        return float(json.loads(path.read_text())["speedup"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    speedup = measure_int8_speedup()
    model, _ = cpu_info()
    record = {"speedup": speedup, "cpu": model, "onnxruntime": ort.__version__}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(record))
        partial.replace(path)  # atomic: a concurrent process reads the old answer or this one
    except OSError:
        pass  # a read-only cache: measured again next process, same rule
    return speedup
