"""ColBERT token vectors per second against PyLate's `ColBERT.encode`, same texts, same threads.

    python -m bench colbert --threads 2 --docs 64 --sets medium long

The model is all-MiniLM-L6-v2's shape (6 layers, 384 wide) with random weights and a 384 -> 128
projection, saved as PyLate saves it (tests/support/colbert.py, which also mends PyLate 1.6's
seams with sentence-transformers 6). Documents are encoded as documents (cut at 180 tokens,
punctuation dropped), queries as queries (expanded to 32). Both sides run in this process,
alternately; the median of `--repeats` runs is printed, with the response size of the token
vectors as float32 and as JSON text.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np
from embedserve.late_interaction import ColBERT

from bench.cross_encoder import QUERIES
from bench.machine import describe_machine
from bench.texts import SETS, make_texts

MINILM_SHAPE = {
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench colbert",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--docs", type=int, default=64)
    parser.add_argument("--sets", nargs="+", default=["medium", "long"], choices=SETS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-batch-tokens", type=int, default=None)
    args = parser.parse_args(argv)

    import torch
    from embedserve.models import resolve_model_dir

    from tests.support.colbert import build_colbert, reference

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        folder = build_colbert(
            Path(scratch),
            resolve_model_dir("all-MiniLM-L6-v2"),
            dimension=128,
            query_length=32,
            document_length=180,
            shape=MINILM_SHAPE,
        )
        ours = ColBERT.from_pretrained(
            folder,
            intra_op_threads=args.threads,
            inter_op_threads=1,
            providers="cpu",
            max_batch_tokens=args.max_batch_tokens,
        )
        theirs = reference(folder)
        print(describe_machine())
        print(
            f"threads={args.threads} repeats={args.repeats} texts={args.docs} "
            f"max_batch_tokens={ours.max_batch_tokens}",
            flush=True,
        )
        print(
            f"{'set':<10}{'texts':>6}{'vectors':>9}{'embedserve t/s':>16}{'pylate t/s':>12}"
            f"{'ratio':>8}{'min cos':>10}{'f32 KB':>8}{'JSON KB':>9}"
        )
        for kind in ["queries", *args.sets]:
            is_query = kind == "queries"
            texts = (QUERIES * args.docs)[: args.docs] if is_query else make_texts(kind, args.docs)

            def run_ours(texts=texts, is_query=is_query):
                return ours.encode(texts, is_query=is_query)

            def run_theirs(texts=texts, is_query=is_query):
                return theirs.encode(texts, is_query=is_query, show_progress_bar=False)

            run_ours()
            run_theirs()
            mine, pylate = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                a = run_ours()
                mine.append(time.perf_counter() - start)
                start = time.perf_counter()
                b = run_theirs()
                pylate.append(time.perf_counter() - start)
            cos = min(float(((x * np.asarray(y)).sum(1)).min()) for x, y in zip(a, b))
            vectors = sum(len(x) for x in a)
            json_kb = len(msgspec.json.encode([x.tolist() for x in a])) / 1024
            e, p = statistics.median(mine), statistics.median(pylate)
            print(
                f"{kind:<10}{len(texts):>6}{vectors:>9}{len(texts) / e:>16.1f}"
                f"{len(texts) / p:>12.1f}{p / e:>7.2f}x{cos:>10.6f}"
                f"{vectors * 128 * 4 / 1024:>8.0f}{json_kb:>9.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
