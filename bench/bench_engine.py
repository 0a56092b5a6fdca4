"""Engine texts/s and tokens/s against sentence-transformers `encode()`, same texts, same threads.

    python -m bench engine --threads 2 --sets mix reference --batch-sizes 1 32 2048

Both run in this process, alternately, repeat after repeat, so a noisy neighbour hurts both.
The baseline needs the bench extra (`pip install '.[bench]'`: torch, sentence-transformers).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from embedserve.engine import Engine
from embedserve.loading import LoadOptions, LoadSettings
from embedserve.models import resolve_model_dir
from embedserve.settings import add_settings, settings_from_args

from bench.machine import describe_machine
from bench.texts import SETS, make_texts


def _cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
    return float(cos.min())


def _run_batches(encode, texts: list[str], batch_size: int) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    parts = [encode(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    return time.perf_counter() - start, np.concatenate(parts)


def _load_baseline(model_dir, threads: int):
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError:
        print("sentence-transformers is not installed (pip install '.[bench]'): engine only")
        return None
    torch.set_num_threads(threads)
    model = SentenceTransformer(str(model_dir), device="cpu")
    # encode()'s own defaults (batch_size=32, length-sorted), as a user would call it.
    return lambda batch: model.encode(batch, normalize_embeddings=True, convert_to_numpy=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench engine",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--sets", nargs="+", default=["short", "medium", "long", "mix"], choices=SETS
    )
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32, 2048])
    parser.add_argument(
        "--texts",
        type=int,
        default=2048,
        help="texts per cell, at most 16 batches' worth (batch size 1 uses --single)",
    )
    parser.add_argument("--single", type=int, default=64, help="texts for the batch-size-1 runs")
    parser.add_argument("--repeats", type=int, default=5)
    # The engine's own flags; threads and providers are the bench's (both runs share them).
    settings = ("max_batch_tokens", "quantize", "precision", "runtime", "cache_bytes")
    add_settings(parser, LoadSettings, settings)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args(argv)

    options = LoadOptions(
        **settings_from_args(args, LoadSettings, settings),
        intra_op_threads=args.threads,
        inter_op_threads=1,
        providers="cpu",
    )
    engine = Engine.from_pretrained(args.model, options=options)
    baseline = (
        None if args.no_baseline else _load_baseline(resolve_model_dir(args.model), args.threads)
    )
    ours = lambda batch: engine.embed(batch).embeddings

    print(describe_machine())
    print(
        f"threads={args.threads} repeats={args.repeats} provider={engine.model_info.provider} "
        f"precision={engine.model_info.precision} max_batch_tokens={engine.max_batch_tokens}",
        flush=True,
    )
    header = (
        f"{'set':<10}{'batch':>6}{'texts':>7}{'tok/text':>9}{'engine t/s':>12}{'engine tok/s':>14}"
    )
    if baseline:
        header += f"{'st t/s':>10}{'ratio':>8}{'min cos':>10}"
    print(header)
    for kind in args.sets:
        for batch_size in args.batch_sizes:
            # Batch 1 runs --single calls; bigger batches run up to 16 calls of batch_size texts.
            n = (
                args.single
                if batch_size == 1
                else max(batch_size, min(args.texts, 16 * batch_size))
            )
            texts = make_texts(kind, n)
            tokens = int(engine.embed(texts).token_counts.sum())
            if baseline:
                baseline(texts[:8])  # warm-up
            ours(texts[:8])
            engine_times, st_times = [], []
            for _ in range(args.repeats):
                seconds, ours_out = _run_batches(ours, texts, batch_size)
                engine_times.append(seconds)
                if baseline:
                    seconds, st_out = _run_batches(baseline, texts, batch_size)
                    st_times.append(seconds)
            e = statistics.median(engine_times)
            row = f"{kind:<10}{batch_size:>6}{n:>7}{tokens / n:>9.1f}{n / e:>12.1f}{tokens / e:>14.0f}"
            if baseline:
                s = statistics.median(st_times)
                row += f"{n / s:>10.1f}{s / e:>7.2f}x{_cosine_min(ours_out, st_out):>10.6f}"
            print(row, flush=True)


if __name__ == "__main__":
    main()
