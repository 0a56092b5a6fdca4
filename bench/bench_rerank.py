"""Reranker pairs/s against sentence-transformers' `CrossEncoder.predict`, same pairs, same threads.

    python -m bench rerank --threads 2 --docs 100 --sets medium long mix

The model is ms-marco-MiniLM-L-6-v2's shape with a random head (bench/cross_encoder.py). Each
call ranks `--docs` documents for one query, as a RAG pipeline does; both sides run in this
process, alternately, so a noisy neighbour hurts both.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from embedserve.reranker import Reranker

from bench.cross_encoder import QUERIES, minilm_cross_encoder
from bench.machine import describe_machine
from bench.texts import SETS, make_texts


def _baseline(folder: Path, threads: int):
    try:
        import torch
        from sentence_transformers import CrossEncoder
    except ImportError:
        print("sentence-transformers is not installed (pip install '.[bench]'): embedserve only")
        return None
    torch.set_num_threads(threads)
    model = CrossEncoder(str(folder), device="cpu")
    # predict()'s own defaults (batch_size=32, length-sorted), as a user would call it.
    return lambda query, docs: model.predict([(query, d) for d in docs], show_progress_bar=False)


def _time(score, docs: list[str]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    scores = [score(q, docs) for q in QUERIES]
    return time.perf_counter() - start, np.concatenate(scores)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench rerank",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--docs", type=int, default=100, help="documents per query")
    parser.add_argument("--sets", nargs="+", default=["medium", "long", "mix"], choices=SETS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-batch-tokens", type=int, default=None)
    parser.add_argument("--quantize", choices=["int8"], default=None)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args(argv)

    folder = minilm_cross_encoder()
    reranker = Reranker.from_pretrained(
        folder,
        intra_op_threads=args.threads,
        inter_op_threads=1,
        providers="cpu",
        max_batch_tokens=args.max_batch_tokens,
        quantize=args.quantize,
    )
    baseline = None if args.no_baseline else _baseline(folder, args.threads)

    def ours(query: str, docs: list[str]) -> np.ndarray:
        prepared = reranker.prepare(query, docs)
        return reranker.relevance(reranker.logits(prepared.pairs))

    print(describe_machine())
    print(
        f"threads={args.threads} repeats={args.repeats} docs/query={args.docs} "
        f"queries={len(QUERIES)} quantize={args.quantize} "
        f"max_batch_tokens={reranker.max_batch_tokens}",
        flush=True,
    )
    header = f"{'set':<10}{'pairs':>7}{'tok/pair':>9}{'embedserve p/s':>16}"
    if baseline:
        header += f"{'st p/s':>10}{'ratio':>8}{'max |diff|':>12}"
    print(header)
    for kind in args.sets:
        docs = make_texts(kind, args.docs)
        pairs = len(QUERIES) * len(docs)
        tokens = sum(int(reranker.prepare(q, docs).token_counts.sum()) for q in QUERIES)
        ours(QUERIES[0], docs[:8])  # warm-up
        if baseline:
            baseline(QUERIES[0], docs[:8])
        mine, theirs = [], []
        for _ in range(args.repeats):
            seconds, our_scores = _time(ours, docs)
            mine.append(seconds)
            if baseline:
                seconds, st_scores = _time(baseline, docs)
                theirs.append(seconds)
        e = statistics.median(mine)
        row = f"{kind:<10}{pairs:>7}{tokens / pairs:>9.1f}{pairs / e:>16.1f}"
        if baseline:
            s = statistics.median(theirs)
            diff = float(np.abs(our_scores - st_scores).max())
            row += f"{pairs / s:>10.1f}{s / e:>7.2f}x{diff:>12.2e}"
        print(row, flush=True)


if __name__ == "__main__":
    main()
