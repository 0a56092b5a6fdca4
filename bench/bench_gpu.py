"""Issue 12's GPU matrix: engine fp16/fp32 vs sentence-transformers fp16 on the same GPU, and HTTP.

    python -m bench gpu                      # on the device, after bench/gpu_setup.sh (README.md)
    python -m bench gpu --smoke              # tiny sizes on the CPU provider: checks it runs

For each model and precision: texts/s and tokens/s for short / medium / long / mixed texts at
32, 256 and 2,048 texts a call, through the GPU pipeline (tokenization on threads ahead of the
model, two batches in flight), with the time split of one plain `embed` call (tokenize / model
/ encode to base64) and fp16's minimum cosine against fp32 on the same texts. Then
sentence-transformers with `model.half()` (batch 256, its own length sort) on the same texts,
and `python -m bench http` at 32 and 256 clients x 32 texts with nvidia-smi's utilization
sampled while it runs. Everything runs in this one process, one model after another.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
from embedserve import _core
from embedserve.engine import Engine
from embedserve.models import resolve_model_dir
from embedserve.pipeline import Pipeline

from bench.machine import describe_machine
from bench.texts import SETS, make_texts

FULL = {
    "batch_sizes": [32, 256, 2048],
    "texts": 4096,
    "repeats": 3,
    "concurrency": [32, 256],
    "texts_per_request": 32,
}
SMOKE = {
    "batch_sizes": [4, 8],
    "texts": 8,
    "repeats": 1,
    "sets": ["short", "mix"],
    "concurrency": [2],
    "texts_per_request": 2,
}


def _cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
    return float(cos.min())


def _timed(
    encode: Callable[[list[str]], np.ndarray], texts: list[str], batch: int, repeats: int
) -> tuple[float, np.ndarray]:
    """Median seconds over `repeats` passes of `texts` in calls of `batch`, and the last output."""
    seconds, out = [], np.empty(0)
    for _ in range(repeats):
        start = time.perf_counter()
        out = np.concatenate([encode(texts[i : i + batch]) for i in range(0, len(texts), batch)])
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), out


def _split(engine: Engine, texts: list[str]) -> str:
    """Where one plain embed() call of `texts` spends its time (ms): tokenize / model / encode."""
    t0 = time.perf_counter()
    prepared = engine.prepare(texts)
    t1 = time.perf_counter()
    vectors = engine.finish(engine.pooled(prepared.sequences))
    t2 = time.perf_counter()
    _core.encode_base64(vectors)
    t3 = time.perf_counter()
    return f"{(t1 - t0) * 1e3:.0f}/{(t2 - t1) * 1e3:.0f}/{(t3 - t2) * 1e3:.0f}"


def _sentence_transformers(
    model_dir: str, device: str, half: bool
) -> Callable[[list[str]], np.ndarray] | None:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        print("sentence-transformers is not installed (pip install '.[bench]'): no baseline")
        return None
    model = SentenceTransformer(model_dir, device=device)
    if half:
        model = model.half()
    # batch 256, as issue 12 asks; encode() sorts by length itself.
    return lambda batch: model.encode(
        batch, batch_size=256, normalize_embeddings=True, convert_to_numpy=True
    ).astype(np.float32)


@contextlib.contextmanager
def gpu_utilization() -> Iterator[list[float]]:
    """nvidia-smi's GPU utilization (%), sampled every 200 ms while the block runs."""
    samples: list[float] = []
    if shutil.which("nvidia-smi") is None:
        yield samples
        return
    proc = subprocess.Popen(
        [
            "nvidia-smi",
            "--query-gpu=utilization.gpu",
            "--format=csv,noheader,nounits",
            "-lms",
            "200",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with contextlib.suppress(ValueError):
                samples.append(float(line.split(",")[0]))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield samples
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        reader.join(timeout=5)


def _nvidia_smi_name() -> str:
    if shutil.which("nvidia-smi") is None:
        return "no nvidia-smi (no GPU)"
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    out = subprocess.run(query, capture_output=True, text=True, check=False, timeout=30)
    return out.stdout.strip() or out.stderr.strip()


def bench_model(args: argparse.Namespace, sizes: dict, model: str) -> None:
    try:
        model_dir = resolve_model_dir(model)
    except LookupError as exc:
        print(f"{model}: skipped ({exc})")
        return
    sets = sizes.get("sets", args.sets)
    texts = {kind: make_texts(kind, sizes["texts"], seed=7) for kind in sets}
    outputs: dict[tuple[str, str, int], np.ndarray] = {}
    print(f"\n## {model}")
    print(
        f"{'precision':<10}{'set':<8}{'batch':>6}{'texts/s':>10}{'tokens/s':>11}"
        f"{'split ms tok/model/enc':>24}{'min cos fp32':>14}{'st fp16 t/s':>13}{'ratio':>7}",
        flush=True,
    )
    baseline = None
    if not args.no_baseline:
        baseline = _sentence_transformers(
            str(model_dir), args.torch_device, half=args.torch_device != "cpu"
        )
    for precision in args.precisions:
        engine = Engine.from_pretrained(
            model_dir,
            providers=args.providers,
            precision=precision,
            max_batch_tokens=args.max_batch_tokens,
            cache_bytes=0,  # each round embeds the same texts: they must reach the model
        )
        pipeline = Pipeline(engine)
        try:
            pipeline.embed(texts[sets[0]][:8])  # warm-up: sessions, arenas, buckets
            for kind in sets:
                pool = texts[kind]
                tokens = int(engine.prepare(pool).token_counts.sum())
                for batch in sizes["batch_sizes"]:
                    calls = pool[: max(batch, min(len(pool), 8 * batch))]
                    share = tokens * len(calls) / len(pool)
                    seconds, out = _timed(
                        lambda b, p=pipeline: p.embed(b).embeddings, calls, batch, sizes["repeats"]
                    )
                    outputs[(precision, kind, batch)] = out
                    reference = outputs.get(("fp32", kind, batch))
                    compare = reference is not None and precision != "fp32"
                    cos = f"{_cosine_min(out, reference):.6f}" if compare else "-"
                    row = (
                        f"{precision:<10}{kind:<8}{batch:>6}{len(calls) / seconds:>10.1f}"
                        f"{share / seconds:>11.0f}{_split(engine, calls[:batch]):>24}{cos:>14}"
                    )
                    if baseline is not None and batch == sizes["batch_sizes"][-1]:
                        st_seconds, _ = _timed(baseline, calls, batch, sizes["repeats"])
                        row += f"{len(calls) / st_seconds:>13.1f}{st_seconds / seconds:>6.2f}x"
                    print(row, flush=True)
        finally:
            pipeline.close()
        del engine


def bench_server(args: argparse.Namespace, sizes: dict, model: str) -> None:
    from bench import bench_http

    argv = [
        "--model",
        model,
        "--providers",
        args.providers,
        "--set",
        "mix",
        "--formats",
        "base64",
        "--concurrency",
        *map(str, sizes["concurrency"]),
        "--texts-per-request",
        str(sizes["texts_per_request"]),
    ]
    if args.smoke:
        argv += [
            "--requests",
            "4",
            "--min-seconds",
            "0",
            "--max-seconds",
            "5",
            "--pool",
            "64",
            "--warmup",
            "1",
            "--engine-seconds",
            "1",
            "--single",
            "2",
        ]
    print(f"\n## HTTP server, {model}: python -m bench http {' '.join(argv)}", flush=True)
    with gpu_utilization() as samples:
        bench_http.main(argv)
    if samples:
        print(
            f"GPU utilization while serving: median {statistics.median(samples):.0f}%, "
            f"max {max(samples):.0f}% ({len(samples)} samples)"
        )
    else:
        print("GPU utilization: n/a (no nvidia-smi)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench gpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models", nargs="+", default=["all-MiniLM-L6-v2", "all-mpnet-base-v2"])
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32", "fp16"],
        choices=["fp32", "fp16"],
        help="fp32 first: fp16's cosine is taken against it",
    )
    parser.add_argument(
        "--sets", nargs="+", default=["short", "medium", "long", "mix"], choices=SETS
    )
    parser.add_argument("--providers", default="cuda")
    parser.add_argument("--torch-device", default="cuda")
    parser.add_argument(
        "--max-batch-tokens",
        type=int,
        default=None,
        help="the engine's padded-token budget (default: planning.py's GPU value)",
    )
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-server", action="store_true")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes on the CPU provider and CPU torch: checks the bench runs",
    )
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    if args.smoke:
        args.providers, args.torch_device = "cpu", "cpu"
    print(describe_machine())
    print(f"device: {_nvidia_smi_name()}")
    print(f"sizes: {sizes}  providers={args.providers}  torch={args.torch_device}", flush=True)
    for model in args.models:
        bench_model(args, sizes, model)
    if not args.no_server:
        bench_server(args, sizes, args.models[0])


if __name__ == "__main__":
    main()
