"""How many texts/s this CPU could reach at most: the GEMM ceiling behind issue #10's goals.

    python -m bench ceiling [--threads 2] [--repeats 7]

An encoder's work is almost all matrix products, so a text costs a countable number of
multiply-adds: 2·(4h² + 2hf) per token per layer for the projections and the feed-forward, and
2·2·n²·h per layer for Q·Kᵀ and attention·V over its n tokens. This suite

1. times one MatMul of the model's own feed-forward shape (tokens × h by h × f) in ONNX Runtime,
   fp32 and as the engine's int8 does it (dynamic u8 activations × per-channel s8 weights,
   7-bit), and in torch (oneDNN/MKL) as a second opinion on the fp32 peak;
2. counts the multiply-adds of the 200 reference texts (`tests/data`, tokens as truncated);
3. prints texts/s = GEMM rate / work per text: what a runner would reach if everything but the
   GEMMs were free and the GEMMs ran at that rate.

A goal above the ceiling cannot be met by scheduling, fusion or batching; only by less work
(fewer padded tokens are already counted as zero here) or a faster kernel class.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.machine import describe_machine

ROOT = Path(__file__).resolve().parent.parent
# (hidden, feed-forward, layers) of the catalog models with reference texts.
MODELS = {
    "all-MiniLM-L6-v2": (384, 1536, 6),
    "all-mpnet-base-v2": (768, 3072, 12),
}
TOKENS_PER_RUN = 1024  # the engine's CPU token budget per model run


def reference_tokens(model: str) -> list[int]:
    data = json.loads((ROOT / "tests" / "data" / f"{model}.public.json").read_text())
    return data["tokens_truncated"]


def flops_per_text(model: str) -> tuple[float, float]:
    """(mean projection+FFN FLOPs, mean attention FLOPs) per reference text."""
    hidden, ffn, layers = MODELS[model]
    tokens = reference_tokens(model)
    linear = sum(layers * 2 * (4 * hidden * hidden + 2 * hidden * ffn) * n for n in tokens)
    attention = sum(layers * 2 * 2 * n * n * hidden for n in tokens)
    return linear / len(tokens), attention / len(tokens)


def _matmul_model(path: Path, hidden: int, ffn: int) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((hidden, ffn), dtype=np.float32) * 0.05
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "ffn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["tokens", hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["tokens", ffn])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(model, path)


def _int8_copy(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        source, target, per_channel=True, reduce_range=True, weight_type=QuantType.QInt8
    )


def _rate(run, flops: float, repeats: int) -> float:
    """Median GFLOP/s of `run` over `repeats` timed loops of >= 0.3 s each."""
    run()
    rates = []
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < 0.3:
            run()
            calls += 1
        rates.append(flops * calls / elapsed / 1e9)
    return statistics.median(rates)


def ort_rate(path: Path, hidden: int, ffn: int, threads: int, repeats: int) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((TOKENS_PER_RUN, hidden), dtype=np.float32)
    return _rate(lambda: session.run(None, {"x": x}), 2 * TOKENS_PER_RUN * hidden * ffn, repeats)


def torch_rate(hidden: int, ffn: int, threads: int, repeats: int) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    x = torch.randn(TOKENS_PER_RUN, hidden)
    w = torch.randn(hidden, ffn)
    with torch.inference_mode():
        return _rate(lambda: x @ w, 2 * TOKENS_PER_RUN * hidden * ffn, repeats)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench ceiling", description=__doc__)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    args = parser.parse_args(argv)
    print(describe_machine())
    print(
        f"threads {args.threads}, {TOKENS_PER_RUN} tokens per MatMul, medians of {args.repeats}\n"
    )
    print("| model | kernel | GEMM GFLOP/s | GFLOP per text | ceiling texts/s |")
    print("|---|---|---:|---:|---:|")
    for model in args.models:
        hidden, ffn, _ = MODELS[model]
        linear, attention = flops_per_text(model)
        with tempfile.TemporaryDirectory() as tmp:
            fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            _matmul_model(fp32, hidden, ffn)
            _int8_copy(fp32, int8)
            rates = {
                "ORT fp32": ort_rate(fp32, hidden, ffn, args.threads, args.repeats),
                "torch fp32": torch_rate(hidden, ffn, args.threads, args.repeats),
                "ORT int8 (u8×s8)": ort_rate(int8, hidden, ffn, args.threads, args.repeats),
            }
        for kernel, rate in rates.items():
            if rate is None:
                continue
            # The int8 row assumes every product ran in int8 (attention stays fp32 in practice).
            work = linear + attention
            print(
                f"| {model} | {kernel} | {rate:.1f} | {work / 1e9:.3f} | {rate * 1e9 / work:.0f} |"
            )


if __name__ == "__main__":
    main()
