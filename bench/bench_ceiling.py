"""How many texts/s this CPU could reach at most: the GEMM ceiling behind issue #10's goals.

    python -m bench ceiling [--threads 2] [--repeats 7]

An encoder's work is almost all matrix products, so a text costs a countable number of
multiply-adds: 2·(4h² + 2hf) per token per layer for the projections and the feed-forward, and
2·2·n²·h per layer for Q·Kᵀ and attention·V over its n tokens. This suite

1. times one MatMul of the model's own feed-forward shape (tokens × h by h × f, from its
   config.json) in ONNX Runtime, fp32 and through the u8 × s8 kernel the engine's int8 graph
   runs (per-channel 7-bit weights; the activations are quantized per call here, where the
   engine's graph has fixed scales: the same MatMulIntegerToFloat either way), and in torch
   (oneDNN/MKL) as a second opinion on the fp32 peak;
2. counts the multiply-adds of the 200 reference texts (`tests/data`, tokens as truncated);
3. prints texts/s = GEMM rate / work per text: what a runner would reach if everything but the
   GEMMs were free and the GEMMs ran at that rate.

A goal above the ceiling cannot be met by scheduling, fusion or batching; only by less work or a
faster kernel class. The count has no padding in it, so the ceiling assumes none.

Then, next to it (`--engine-rounds`, 0 to skip), the engine on the same texts (800: the 200
reference texts four times, one `embed` call, result cache off) in fp32 and int8, and its share of
the matching ceiling; and the engine's own padded batches run through the graph with the plain
attention ops and through the fused copy its CPU sessions use (models/fused_attention.py), so
the fusion's part is measured on its own. Rounds alternate; medians.

With `--profile`, last: where a bulk session's time goes. ONNX Runtime's per-node profiler on a
session of one intra-op thread (what `Engine.bulk_engine` opens) over the engine's bulk batches of
the same 800 texts (`planning.bulk_batch_tokens`), one after another, kernel time by op type.
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
DATA = ROOT / "tests" / "data"
# Every model with reference texts.
MODELS = sorted(p.name.removesuffix(".public.json") for p in DATA.glob("*.public.json"))


def tokens_per_run() -> int:
    """The engine's CPU token budget per model run, which sizes the timed MatMul."""
    from embedserve.precision import get_precision

    return get_precision("fp32").cpu_batch_tokens


def model_shape(model: str) -> tuple[int, int, int]:
    """(hidden, feed-forward, layers) from the model's own config.json (pulled if need be)."""
    from embedserve.models import resolve_model_dir

    config = json.loads((resolve_model_dir(model) / "config.json").read_text())
    return config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]


def reference_tokens(model: str) -> list[int]:
    data = json.loads((DATA / f"{model}.public.json").read_text())
    return data["tokens_truncated"]


def flops_per_text(model: str, hidden: int, ffn: int, layers: int) -> tuple[float, float]:
    """(mean projection+FFN FLOPs, mean attention FLOPs) per reference text."""
    tokens = reference_tokens(model)
    linear = sum(layers * 2 * (4 * hidden * hidden + 2 * hidden * ffn) * n for n in tokens)
    attention = sum(layers * 2 * 2 * n * n * hidden for n in tokens)
    return linear / len(tokens), attention / len(tokens)


def _matmul_model(path: Path, hidden: int, ffn: int) -> None:
    import onnx
    from embedserve.runtime.int8_speed import feed_forward_matmul

    onnx.save(feed_forward_matmul(False, "tokens", hidden, ffn), path)


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


def ort_rate(path: Path, rows: int, hidden: int, ffn: int, threads: int, repeats: int) -> float:
    matmul = session(path, threads)
    x = np.random.default_rng(1).standard_normal((rows, hidden), dtype=np.float32)
    return _rate(lambda: matmul.run(None, {"x": x}), 2 * rows * hidden * ffn, repeats)


def torch_rate(rows: int, hidden: int, ffn: int, threads: int, repeats: int) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    x = torch.randn(rows, hidden)
    w = torch.randn(hidden, ffn)
    with torch.inference_mode():
        return _rate(lambda: x @ w, 2 * rows * hidden * ffn, repeats)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench ceiling", description=__doc__)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--models", nargs="*", default=MODELS, choices=MODELS)
    parser.add_argument("--engine-rounds", type=int, default=5)
    parser.add_argument(
        "--profile", action="store_true", help="then the bulk session's time by op type (fp32)"
    )
    args = parser.parse_args(argv)
    rows = tokens_per_run()
    print(describe_machine())
    print(f"threads {args.threads}, {rows} tokens per MatMul, medians of {args.repeats}\n")
    print("| model | kernel | GEMM GFLOP/s | GFLOP per text | ceiling texts/s |")
    print("|---|---|---:|---:|---:|")
    engine_table = []
    for model in args.models:
        hidden, ffn, layers = model_shape(model)
        # The int8 row counts every product as int8 (attention stays fp32 in practice).
        work = sum(flops_per_text(model, hidden, ffn, layers))
        timed = (rows, hidden, ffn, args.threads, args.repeats)
        with tempfile.TemporaryDirectory() as tmp:
            fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            _matmul_model(fp32, hidden, ffn)
            _int8_copy(fp32, int8)
            rates = {
                "ORT fp32": ort_rate(fp32, *timed),
                "torch fp32": torch_rate(*timed),
                "ORT int8 (u8×s8)": ort_rate(int8, *timed),
            }
        for kernel, rate in rates.items():
            if rate is None:
                continue
            print(
                f"| {model} | {kernel} | {rate:.1f} | {work / 1e9:.3f} | {rate * 1e9 / work:.0f} |"
            )
        if args.engine_rounds:
            ceilings = {k: r * 1e9 / work for k, r in rates.items() if r is not None}
            engine_table += engine_rows(model, args.threads, args.engine_rounds, ceilings)
    if engine_table:
        print(f"\nThe engine next to it (800 texts a call, medians of {args.engine_rounds}):\n")
        print("| model | runner | texts/s | against | share of the ceiling |")
        print("|---|---|---:|---|---:|")
        print("\n".join(engine_table))
    if args.profile:
        print("\nA bulk session's kernel time by op type (fp32, 1 thread, 800 texts):\n")
        print("| model | op | share | seconds |")
        print("|---|---|---:|---:|")
        for model in args.models:
            print("\n".join(profile_rows(model)))


def _engine(model: str, precision: str, threads: int):
    from embedserve.engine import Engine
    from embedserve.loading import LoadOptions

    options = LoadOptions(
        precision=precision,
        cache_bytes=0,
        intra_op_threads=threads,
        inter_op_threads=1,
        providers="cpu",
    )
    return Engine.from_pretrained(model, options=options)


def session(path: Path, threads: int, library: Path | None = None):
    """A CPU session of the graph at `path` with embedserve's ops registered: the package's
    library, or the build at `library` (`bench ortops` compares two)."""
    import onnxruntime as ort
    from embedserve.runtime.custom_ops import register_library

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if library is None:
        register_library(options)  # embedserve's ops, for the graphs that have them
    else:
        options.register_custom_ops_library(str(library.resolve()))
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def bulk_batches(model: str, texts: int = 800):
    """An fp32 engine of `model` on one thread, and the padded batches (input_ids, attention
    mask, token types) its bulk run makes of the reference texts repeated to `texts`, with
    `planning.bulk_batch_tokens`, as `Engine.embed` does for a one-thread bulk call."""
    from embedserve.planning import bulk_batch_tokens, pad_batch, plan_batches

    reference = json.loads((DATA / f"{model}.public.json").read_text())["texts"]
    engine = _engine(model, "fp32", 1)
    sequences = engine.prepare((reference * (texts // len(reference) + 1))[:texts]).sequences
    lengths = np.fromiter((len(s) for s in sequences), np.int64, len(sequences))
    groups = plan_batches(lengths, bulk_batch_tokens(engine.max_batch_tokens))
    return engine, [pad_batch([sequences[i] for i in group]) for group in groups]


def engine_rows(model: str, threads: int, rounds: int, ceilings: dict[str, float]) -> list[str]:
    """The engine's texts/s and share of the ceiling, and the fused attention's part: the
    engine's own batches through the standard graph, ONNX Runtime's fused op and ours."""
    from embedserve.models.fused_attention import MULTI_HEAD, PADDED
    from embedserve.models.graph import fused_onnx
    from embedserve.planning import pad_batch, plan_batches
    from embedserve.runtime.custom_ops import library
    from embedserve.runtime.session import graph_feeds

    texts = json.loads((DATA / f"{model}.public.json").read_text())["texts"] * 4
    engines = {p: _engine(model, p, threads) for p in ("fp32", "int8")}
    fp32 = engines["fp32"]
    sequences = fp32.prepare(texts).sequences
    lengths = np.fromiter((len(s) for s in sequences), np.int64, len(sequences))
    batches = [
        pad_batch([sequences[i] for i in group])
        for group in plan_batches(lengths, fp32.max_batch_tokens)
    ]
    plain_path = Path(fp32.session.path)
    graphs = {"plain attention": session(plain_path, threads)}
    graphs["ORT's fused attention"] = session(fused_onnx(plain_path, MULTI_HEAD), threads)
    if library() is not None:
        graphs["embedserve's attention"] = session(fused_onnx(plain_path, PADDED), threads)
    names = {k: [i.name for i in g.get_inputs()] for k, g in graphs.items()}

    def run_graph(label: str) -> None:
        for ids, mask, types in batches:
            graphs[label].run(None, graph_feeds(names[label], ids, mask, types))

    timed: dict[str, list[float]] = {}
    jobs = {f"engine {p}": (lambda e=e: e.embed(texts)) for p, e in engines.items()}
    jobs |= {f"fp32 graph, {k}": (lambda k=k: run_graph(k)) for k in graphs}
    for job in jobs.values():
        job()  # warm
    for _ in range(rounds):
        for label, job in jobs.items():
            start = time.perf_counter()
            job()
            timed.setdefault(label, []).append(len(texts) / (time.perf_counter() - start))
    rows = []
    for label, rates in timed.items():
        rate = statistics.median(rates)
        kernel = "ORT int8 (u8×s8)" if label.endswith("int8") else "ORT fp32"
        share = rate / ceilings[kernel]
        rows.append(f"| {model} | {label} | {rate:.1f} | {kernel} | {100 * share:.0f} % |")
    return rows


def profile_rows(model: str) -> list[str]:
    """ONNX Runtime's per-node profile of a one-thread session of the fused fp32 graph over the
    engine's bulk batches: the share of kernel time each op type takes."""
    import onnxruntime as ort
    from embedserve.models.graph import fused_onnx
    from embedserve.runtime.custom_ops import attention_op
    from embedserve.runtime.session import graph_feeds

    engine, batches = bulk_batches(model)
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        path = fused_onnx(Path(engine.session.path), attention_op(options))
        profiled = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in profiled.get_inputs()]
        for batch in batches:
            profiled.run(None, graph_feeds(names, *batch))
        events = json.loads(Path(profiled.end_profiling()).read_text())
    by_op: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            by_op[op] = by_op.get(op, 0.0) + event["dur"] / 1e6
    total = sum(by_op.values())
    ranked = sorted(by_op.items(), key=lambda item: -item[1])
    return [f"| {model} | {op} | {100 * s / total:.1f} % | {s:.3f} |" for op, s in ranked]


if __name__ == "__main__":
    main()
