"""embed-file texts/s against the engine's own texts/s on the same texts, same engine.

    python -m bench corpus --texts 4096 --set mix --repeats 3

The engine side calls `engine.embed()` on consecutive slices of `--batch-texts` texts held in
memory (tokenize, model, pool, one after another). The embed-file side reads the same texts
from a JSONL file, and writes Parquet parts with a manifest, fsynced. Runs alternate, so a
noisy neighbour hurts both; the ratio of medians is the number that matters (target ≥ 0.95).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from embedserve.corpus import EmbedFileOptions, embed_file
from embedserve.engine import Engine
from embedserve.loading import LoadOptions

from bench.machine import describe_machine
from bench.texts import SETS, make_texts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench corpus",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--set", default="mix", choices=SETS)
    parser.add_argument("--texts", type=int, default=4096)
    parser.add_argument("--batch-texts", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--precision", choices=["fp32", "int8"], default="fp32")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    engine = Engine.from_pretrained(
        args.model,
        providers="cpu",
        intra_op_threads=args.threads,
        quantize="int8" if args.precision == "int8" else None,
        cache_bytes=0,  # each repeat embeds the same texts: they must reach the model
    )
    texts = make_texts(args.set, args.texts)
    work = Path(tempfile.mkdtemp(prefix="bench-corpus-"))
    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    options = EmbedFileOptions(
        model=args.model,
        batch_texts=args.batch_texts,
        quiet=True,
        load=LoadOptions(precision=args.precision),
    )
    engine.embed(texts[:64])  # warm-up
    tokens = sum(engine.embed(texts[i : i + 256]).total_tokens for i in range(0, len(texts), 256))
    print(describe_machine())
    print(
        f"set={args.set} texts={len(texts)} tokens/text={tokens / len(texts):.1f} "
        f"batch_texts={args.batch_texts} precision={args.precision} repeats={args.repeats}"
    )
    engine_s, file_s = [], []
    try:
        for repeat in range(args.repeats):
            start = time.perf_counter()
            for i in range(0, len(texts), args.batch_texts):
                engine.embed(texts[i : i + args.batch_texts])
            engine_s.append(time.perf_counter() - start)
            out = work / f"out-{repeat}"
            start = time.perf_counter()
            totals = embed_file(corpus, out, options, engine=engine, log=None)
            file_s.append(time.perf_counter() - start)
            assert totals["rows"] == len(texts)
            shutil.rmtree(out)
            print(
                f"  repeat {repeat}: engine {len(texts) / engine_s[-1]:.1f} texts/s, "
                f"embed-file {len(texts) / file_s[-1]:.1f} texts/s",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    e, f = statistics.median(engine_s), statistics.median(file_s)
    print(f"{'':<12}{'texts/s':>10}{'tokens/s':>10}")
    print(f"{'engine':<12}{len(texts) / e:>10.1f}{tokens / e:>10.0f}")
    print(f"{'embed-file':<12}{len(texts) / f:>10.1f}{tokens / f:>10.0f}")
    print(f"ratio embed-file / engine: {e / f:.3f} (median of {args.repeats} alternated runs)")


if __name__ == "__main__":
    main()
