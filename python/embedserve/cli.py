"""`embedserve serve | embed | embed-file | pull | models | bench`: the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from embedserve._version import __version__
from embedserve.loading import LoadOptions, LoadSettings
from embedserve.models import DEFAULT_MODEL
from embedserve.settings import ENV_PREFIX, add_settings, positive, settings_from_args

# What decides the files `pull` prepares (the graph its kind loads: on CUDA, an embedder's is
# fp16 and pools; an int8 graph is calibrated on the ids of the tokenizer mode); the commands
# that load a model take every LoadSetting.
PULL_SETTINGS = ("precision", "quantize", "compile", "providers", "runtime", "tokenizer_mode")
SETTINGS_NOTE = (
    f"Flags that say how the model loads also read {ENV_PREFIX}<NAME> from the environment, "
    f"as `serve` does (for example {ENV_PREFIX}PRECISION)."
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
    except KeyboardInterrupt:
        # Ctrl-C is the user's choice, not a failure to trace; 130 is the shells' 128 + SIGINT.
        print(f"embedserve: {getattr(args, 'interrupted', 'interrupted')}", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedserve", description=__doc__)
    parser.add_argument("--version", action="version", version=f"embedserve {__version__}")
    commands = parser.add_subparsers(title="commands")

    pull = commands.add_parser(
        "pull",
        help="fetch a model into the cache and prepare its ONNX graph "
        "(`pull tiktoken`: the rank files that decode OpenAI token arrays)",
        description="Fetch a model into the cache and build the graph it loads with these "
        "settings, as `serve` does before its workers start (int8: calibrate and quantize). "
        + SETTINGS_NOTE,
    )
    pull.add_argument("model", nargs="?", default=DEFAULT_MODEL)
    add_settings(pull, LoadSettings, PULL_SETTINGS)
    pull.set_defaults(run=_pull)

    models = commands.add_parser("models", help="list the catalog and what is in the cache")
    models.set_defaults(run=_models)

    embed = commands.add_parser(
        "embed", help="print the vectors of texts as JSON", description=SETTINGS_NOTE
    )
    embed.add_argument(
        "texts", nargs="*", help="texts to embed; none or '-' reads lines from stdin"
    )
    embed.add_argument("--model", default=DEFAULT_MODEL)
    embed.add_argument("--dimensions", type=int)
    embed.add_argument("--no-normalize", dest="normalize", action="store_false", default=None)
    embed.add_argument("--no-truncate", dest="truncate", action="store_false")
    embed.add_argument("--prompt-name")
    add_settings(embed, LoadSettings)
    embed.set_defaults(run=_embed)

    bench = commands.add_parser(
        "bench", help="measure the engine's texts/s on this machine", description=SETTINGS_NOTE
    )
    bench.add_argument("--model", default=DEFAULT_MODEL)
    bench.add_argument("--texts", type=positive, default=512)
    bench.add_argument(
        "--words", type=positive, default=40, help="words per text (≈1.3 tokens a word)"
    )
    bench.add_argument("--batch-size", type=positive, default=512, help="texts per embed() call")
    bench.add_argument("--repeats", type=positive, default=3)
    add_settings(bench, LoadSettings, aliases={"intra_op_threads": ["--threads"]})
    bench.set_defaults(run=_bench)

    from embedserve.corpus.cli import add_embed_file_command
    from embedserve.server.cli import add_serve_command

    add_serve_command(commands)
    add_embed_file_command(commands)
    return parser


def load_options(args: argparse.Namespace, names: Sequence[str] | None = None) -> LoadOptions:
    """The LoadOptions a command's settings flags (`add_settings`) and the environment give."""
    return LoadOptions(**settings_from_args(args, LoadSettings, names))


def _pull(args: argparse.Namespace) -> int:
    from embedserve.kinds import build_graph

    if args.model == "tiktoken":
        from embedserve.token_encodings import pull_all

        for path in pull_all():
            print(f"{path.stem}: {path}")
        return 0
    # For the machine its providers name, perhaps another: a CUDA image is built without a GPU.
    directory, graph = build_graph(args.model, load_options(args, PULL_SETTINGS), here=False)
    print(f"{args.model}: {directory}")
    print(f"onnx graph: {graph}")
    return 0


def _embed(args: argparse.Namespace) -> int:
    from embedserve import _core
    from embedserve.engine import Engine

    texts = _stdin_texts() if not args.texts or args.texts == ["-"] else _argv_texts(args.texts)
    engine = Engine.from_pretrained(args.model, options=load_options(args))
    result = engine.embed(
        texts,
        dimensions=args.dimensions,
        normalize=args.normalize,
        truncate=args.truncate,
        prompt_name=args.prompt_name,
    )
    sys.stdout.write("[" + ",\n".join(_core.encode_json(result.embeddings)) + "]\n")
    return 0


def _argv_texts(texts: Sequence[str]) -> list[str]:
    """The texts as given; Python decodes undecodable argv bytes to lone surrogates, which
    tokenization would fail on with a traceback."""
    for number, text in enumerate(texts, 1):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"text {number} on the command line is not valid UTF-8") from None
    return list(texts)


def _stdin_texts() -> list[str]:
    """One text per line of stdin, decoded strictly so a bad line is named. A blank line is
    refused, not skipped: `embed` prints one vector per line, and a dropped line would shift every
    vector after it onto the wrong text."""
    texts = []
    for number, raw in enumerate(sys.stdin.buffer.read().splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"stdin line {number} is not valid UTF-8 (byte {exc.start + 1}: {exc.reason})"
            ) from None
        if not line.strip():
            raise ValueError(
                f"stdin line {number} is blank: each line is one text and gets one vector"
            )
        texts.append(line)
    return texts


def _models(args: argparse.Namespace) -> int:
    from embedserve.models.inventory import format_inventory, inventory

    sys.stdout.write(format_inventory(inventory()))
    return 0


def _bench(args: argparse.Namespace) -> int:
    """A quick self-check of speed; bench/ in the repository compares against baselines."""
    import statistics
    import time

    from embedserve.engine import Engine

    engine = Engine.from_pretrained(args.model, options=load_options(args))
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
