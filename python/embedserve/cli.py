"""`embedserve serve | embed | embed-file | pull | models | bench`: the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from embedserve.models import DEFAULT_MODEL
from embedserve.precision import PRECISIONS, add_precision_arguments

COMPILE_HELP = (
    "compile the safetensors weights even where the model ships an ONNX graph "
    "(from a hub repo, download those weights instead of the graph)"
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (LookupError, ValueError, RuntimeError, OSError) as exc:
        print(f"embedserve: error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedserve", description=__doc__)
    commands = parser.add_subparsers(title="commands")

    pull = commands.add_parser(
        "pull",
        help="fetch a model into the cache and prepare its ONNX graph "
        "(`pull tiktoken`: the rank files that decode OpenAI token arrays)",
    )
    pull.add_argument("model", nargs="?", default=DEFAULT_MODEL)
    pull.add_argument("--quantize", choices=["int8"], help="older spelling of --precision int8")
    pull.add_argument(
        "--precision",
        choices=sorted(PRECISIONS),
        type=str.lower,
        help="also build the graph this precision runs (int8: calibrate and quantize)",
    )
    pull.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    pull.set_defaults(run=_pull)

    models = commands.add_parser("models", help="list the catalog and what is in the cache")
    models.set_defaults(run=_models)

    embed = commands.add_parser("embed", help="print the vectors of texts as JSON")
    embed.add_argument(
        "texts", nargs="*", help="texts to embed; none or '-' reads lines from stdin"
    )
    embed.add_argument("--model", default=DEFAULT_MODEL)
    embed.add_argument("--dimensions", type=int)
    embed.add_argument("--no-normalize", dest="normalize", action="store_false", default=None)
    embed.add_argument("--no-truncate", dest="truncate", action="store_false")
    embed.add_argument("--prompt-name")
    embed.add_argument("--providers", help="cpu, cuda, or an ONNX Runtime provider name")
    embed.add_argument("--quantize", choices=["int8"], help="older spelling of --precision int8")
    add_precision_arguments(embed)
    embed.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    embed.set_defaults(run=_embed)

    bench = commands.add_parser("bench", help="measure the engine's texts/s on this machine")
    bench.add_argument("--model", default=DEFAULT_MODEL)
    bench.add_argument("--texts", type=int, default=512)
    bench.add_argument("--words", type=int, default=40, help="words per text (≈1.3 tokens a word)")
    bench.add_argument("--batch-size", type=int, default=512, help="texts per embed() call")
    bench.add_argument("--repeats", type=int, default=3)
    bench.add_argument("--providers")
    bench.add_argument("--quantize", choices=["int8"], help="older spelling of --precision int8")
    add_precision_arguments(bench)
    bench.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    bench.set_defaults(run=_bench)

    from embedserve.corpus.cli import add_embed_file_command
    from embedserve.server.cli import add_serve_command

    add_serve_command(commands)
    add_embed_file_command(commands)
    return parser


def _pull(args: argparse.Namespace) -> int:
    from embedserve.models import resolve_model_dir
    from embedserve.models.variants import graph_for
    from embedserve.precision import resolve_precision

    if args.model == "tiktoken":
        from embedserve.token_encodings import pull_all

        for path in pull_all():
            print(f"{path.stem}: {path}")
        return 0
    directory = resolve_model_dir(args.model, compile=args.compile)
    graph = graph_for(
        directory, resolve_precision(args.precision, args.quantize), compile=args.compile
    )
    print(f"{args.model}: {directory}")
    print(f"onnx graph: {graph}")
    return 0


def _embed(args: argparse.Namespace) -> int:
    from embedserve import _core
    from embedserve.engine import Engine

    texts = list(args.texts)
    if not texts or texts == ["-"]:
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    engine = Engine.from_pretrained(
        args.model,
        providers=args.providers,
        quantize=args.quantize,
        compile=args.compile,
        precision=args.precision,
        runtime=args.runtime,
    )
    result = engine.embed(
        texts,
        dimensions=args.dimensions,
        normalize=args.normalize,
        truncate=args.truncate,
        prompt_name=args.prompt_name,
    )
    sys.stdout.write("[" + ",\n".join(_core.encode_json(result.embeddings)) + "]\n")
    return 0


def _models(args: argparse.Namespace) -> int:
    from embedserve.models.inventory import format_inventory, inventory

    sys.stdout.write(format_inventory(inventory()))
    return 0


def _bench(args: argparse.Namespace) -> int:
    """A quick self-check of speed; bench/ in the repository compares against baselines."""
    import statistics
    import time

    from embedserve.engine import Engine

    engine = Engine.from_pretrained(
        args.model,
        providers=args.providers,
        quantize=args.quantize,
        precision=args.precision,
        runtime=args.runtime,
        intra_op_threads=args.threads,
    )
    words = [
        "embedding",
        "models",
        "turn",
        "text",
        "into",
        "vectors",
        "so",
        "that",
        "similar",
        "meanings",
        "land",
        "close",
        "together",
        "in",
        "space",
        "for",
        "search",
        "clustering",
        "and",
        "deduplication",
    ]
    texts = [
        " ".join(words[(i + j) % len(words)] for j in range(args.words)) for i in range(args.texts)
    ]
    engine.embed(texts[:8])
    seconds, tokens = [], 0
    for _ in range(args.repeats):
        start = time.perf_counter()
        for i in range(0, len(texts), args.batch_size):
            tokens += engine.embed(texts[i : i + args.batch_size]).total_tokens
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    per_run_tokens = tokens // args.repeats
    info = engine.model_info
    print(
        f"{info.name} on {info.provider} ({info.precision}): {args.texts / median:.1f} texts/s, "
        f"{per_run_tokens / median:.0f} tokens/s (median of {args.repeats}, "
        f"{per_run_tokens / args.texts:.1f} tokens a text, {args.batch_size} texts a call)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
