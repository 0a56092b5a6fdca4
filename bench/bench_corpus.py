"""embed-file texts/s against the engine's own texts/s on the same texts, same engine.

    python -m bench corpus --texts 4096 --set mix --repeats 3

The engine side calls `engine.embed()` on consecutive slices of `--batch-texts` texts held in
memory (tokenize, model, pool, one after another). The embed-file side reads the same texts
from a JSONL file, and writes Parquet parts with a manifest, fsynced. Runs alternate, so a
noisy neighbour hurts both; the ratio of medians is the number that matters (target ≥ 0.95).

    python -m bench corpus --disk-cache --texts 4096 --repeated 0.3 --changed 0.1

The disk tier instead (`embed-file --cache-dir`): a corpus where `--repeated` of the rows repeat
an earlier row, embedded without the disk tier, then with it into an empty cache folder (the
first run), then rerun on a copy with `--changed` of its rows edited (the rerun). Each run
starts with an empty memory cache, as a new process would.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from embedserve.corpus import EmbedFileOptions, embed_file
from embedserve.engine import Engine
from embedserve.loading import LoadOptions
from embedserve.vector_cache import DEFAULT_CACHE_BYTES, VectorCache

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
    parser.add_argument("--disk-cache", action="store_true", help="bench the disk tier instead")
    parser.add_argument("--repeated", type=float, default=0.3, metavar="FRACTION")
    parser.add_argument("--changed", type=float, default=0.1, metavar="FRACTION")
    args = parser.parse_args(argv)
    if args.disk_cache:
        disk_cache(args)
        return

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


def with_repeats(texts: list[str], fraction: float, seed: int = 1) -> list[str]:
    """`texts` with about `fraction` of the rows replaced by a copy of an earlier row."""
    rng = random.Random(seed)
    out = list(texts)
    for i in range(1, len(out)):
        if rng.random() < fraction:
            out[i] = out[rng.randrange(i)]
    return out


def edited(texts: list[str], fraction: float, seed: int = 2) -> list[str]:
    rng = random.Random(seed)
    return [t + " (edited)" if rng.random() < fraction else t for t in texts]


def disk_cache(args: argparse.Namespace) -> None:
    engine = Engine.from_pretrained(
        args.model,
        providers="cpu",
        intra_op_threads=args.threads,
        precision=args.precision,
    )
    first = with_repeats(make_texts(args.set, args.texts), args.repeated)
    second = edited(first, args.changed)
    work = Path(tempfile.mkdtemp(prefix="bench-corpus-disk-"))
    corpora = {}
    for name, texts in (("first", first), ("second", second)):
        corpora[name] = work / f"{name}.jsonl"
        corpora[name].write_text(
            "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts))
        )
    engine.embed(first[:64])  # warm-up
    print(describe_machine())
    print(
        f"set={args.set} texts={len(first)} distinct={len(set(first))} "
        f"changed on rerun={sum(a != b for a, b in zip(first, second))} "
        f"batch_texts={args.batch_texts} precision={args.precision} repeats={args.repeats}"
    )
    runs: dict[str, list[float]] = {"no disk tier": [], "first run": [], "rerun": []}
    counts: dict[str, tuple[int, int]] = {}
    try:
        for repeat in range(args.repeats):
            cache_dir = work / f"cache-{repeat}"
            for label, corpus, folder in (
                ("no disk tier", "first", None),
                ("first run", "first", cache_dir),
                ("rerun", "second", cache_dir),
            ):
                engine.cache = VectorCache(DEFAULT_CACHE_BYTES)  # a new process's memory tier
                options = EmbedFileOptions(
                    model=args.model,
                    batch_texts=args.batch_texts,
                    quiet=True,
                    cache_dir=folder,
                    load=LoadOptions(precision=args.precision),
                )
                out = work / "out"
                start = time.perf_counter()
                totals = embed_file(corpora[corpus], out, options, engine=engine, log=None)
                runs[label].append(time.perf_counter() - start)
                assert totals["rows"] == len(first)
                counts[label] = (totals.get("cache_hits", 0), totals.get("cache_misses", 0))
                shutil.rmtree(out)
            print(
                f"  repeat {repeat}: "
                + ", ".join(f"{k} {len(first) / v[-1]:.1f} texts/s" for k, v in runs.items()),
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'':<14}{'texts/s':>10}{'disk hits':>11}{'misses':>8}")
    for label, seconds in runs.items():
        hits, misses = counts[label]
        rate = len(first) / statistics.median(seconds)
        print(f"{label:<14}{rate:>10.1f}{hits:>11}{misses:>8}")
    ratio = statistics.median(runs["first run"]) / statistics.median(runs["rerun"])
    print(f"rerun / first run: {ratio:.2f}x (median of {args.repeats})")


if __name__ == "__main__":
    main()
