"""`embedserve embed-file INPUT --out OUT`: embed a corpus into Parquet, resumably."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from embedserve.corpus.encode import EMBEDDING_TYPES
from embedserve.corpus.pipeline import ON_ERROR, EmbedFileOptions
from embedserve.loading import LoadOptions, LoadSettings
from embedserve.models import DEFAULT_MODEL
from embedserve.quantization import BYTE_RULE
from embedserve.settings import ENV_PREFIX, add_settings, positive, settings_from_args

_DEFAULTS = EmbedFileOptions()


def add_embed_file_command(commands: Any) -> argparse.ArgumentParser:
    """Add `embed-file` to the `embedserve` subcommands (an argparse subparsers object)."""
    cmd = commands.add_parser(
        "embed-file",
        help="embed a corpus (JSONL, CSV, Parquet, text; a file, folder or glob) into Parquet",
        description="Embed every row of INPUT into Parquet parts in folder OUT, with a manifest. "
        "Run the same command again to resume after an interruption. Flags that say how the "
        f"model loads also read {ENV_PREFIX}<NAME> from the environment, as `serve` does; the "
        "precision is fp32 unless one is given, on a GPU too.",
    )
    cmd.add_argument(
        "input", metavar="INPUT", help="a file, a folder (searched recursively) or a glob"
    )
    cmd.add_argument("--out", required=True, metavar="OUT", help="output folder")
    cmd.add_argument("--model", default=DEFAULT_MODEL)
    cmd.add_argument("--text-column", default=_DEFAULTS.text_column, metavar="NAME")
    cmd.add_argument(
        "--id-column",
        default=_DEFAULTS.id_column,
        metavar="NAME",
        help="copied to the output's `id` (default: %(default)s; null when absent)",
    )
    cmd.add_argument(
        "--dimensions",
        type=positive,
        metavar="N",
        help="keep the first N dimensions (Matryoshka), then normalize",
    )
    cmd.add_argument(
        "--embedding-type",
        choices=EMBEDDING_TYPES,
        default=_DEFAULTS.embedding_type,
        help=f"stored values: float32, float16, or int8, uint8, binary, ubinary by {BYTE_RULE} "
        "(docs/server.md, Byte encodings) (default: %(default)s)",
    )
    cmd.add_argument(
        "--batch-texts",
        type=positive,
        default=_DEFAULTS.batch_texts,
        metavar="N",
        help="texts per model call and per row group (default: %(default)s)",
    )
    cmd.add_argument(
        "--rows-per-part",
        type=positive,
        default=_DEFAULTS.rows_per_part,
        metavar="N",
        help="rows per Parquet part: the work a kill can lose (default: %(default)s)",
    )
    cmd.add_argument(
        "--on-error",
        choices=ON_ERROR,
        default=_DEFAULTS.on_error,
        help="bad rows (missing text, empty, not UTF-8): skip and report them, or stop "
        "(default: %(default)s)",
    )
    cmd.add_argument(
        "--cache-dir",
        type=_folder,
        metavar="DIR",
        help="keep pooled vectors in DIR (a local disk) and reuse them: a rerun on a corpus "
        "whose chunks are mostly unchanged embeds only the changed ones (default: no disk cache)",
    )
    cmd.add_argument(
        "--cache-dir-bytes",
        type=positive,
        default=_DEFAULTS.cache_dir_bytes,
        metavar="N",
        help="bytes the --cache-dir entries may take, least recently used dropped first "
        "(default: %(default)s)",
    )
    add_settings(cmd, LoadSettings, aliases={"intra_op_threads": ["--threads"]})
    cmd.add_argument("--quiet", action="store_true", help="no progress bar, only the summary")
    cmd.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="embed on a Ray cluster through Ray Data (ADDRESS: the head, e.g. "
        "ray://host:10001; 'auto' or nothing: RAY_ADDRESS or a local instance)",
    )
    cmd.add_argument(
        "--ray-actors",
        type=positive,
        metavar="N",
        help="with --ray: model actors (default: one per --ray-cpus-per-actor CPUs)",
    )
    cmd.add_argument("--ray-cpus-per-actor", type=float, default=1.0, metavar="N")
    cmd.add_argument("--ray-gpus-per-actor", type=float, default=0.0, metavar="N")
    cmd.set_defaults(run=run_embed_file)
    return cmd


def options_from_args(args: argparse.Namespace) -> EmbedFileOptions:
    return EmbedFileOptions(
        model=args.model,
        text_column=args.text_column,
        id_column=args.id_column or None,
        dimensions=args.dimensions,
        embedding_type=args.embedding_type,
        batch_texts=args.batch_texts,
        rows_per_part=args.rows_per_part,
        on_error=args.on_error,
        quiet=args.quiet,
        cache_dir=args.cache_dir,
        cache_dir_bytes=args.cache_dir_bytes,
        load=LoadOptions(**settings_from_args(args, LoadSettings)),
    )


def _folder(text: str) -> str:
    """A folder that exists or can be made: refused at parse time, before the model loads."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder")
    return text


def run_embed_file(args: argparse.Namespace) -> int:
    from embedserve.corpus.pipeline import embed_file

    options = options_from_args(args)
    if args.ray is None:
        embed_file(args.input, args.out, options)
        return 0
    if options.cache_dir is not None:
        raise SystemExit("embed-file: --cache-dir works with the in-process model, not with --ray")
    from embedserve.integrations.ray import embed_file_on_ray

    embed_file_on_ray(
        args.input,
        args.out,
        options,
        address=args.ray,
        actors=args.ray_actors,
        num_cpus=args.ray_cpus_per_actor,
        num_gpus=args.ray_gpus_per_actor,
    )
    return 0
