"""`embedserve embed-file INPUT --out OUT`: embed a corpus into Parquet, resumably."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from embedserve.corpus.encode import EMBEDDING_TYPES
from embedserve.corpus.pipeline import ON_ERROR, EmbedFileOptions
from embedserve.corpus.readers import CorpusError
from embedserve.corpus.remote import ServerOptions
from embedserve.loading import LoadOptions, LoadSettings
from embedserve.models import DEFAULT_MODEL
from embedserve.quantization import BYTE_RULE
from embedserve.settings import (
    ENV_PREFIX,
    add_settings,
    flag_name,
    non_negative_float,
    positive,
    positive_float,
    settings_from_args,
    settings_of,
)

_DEFAULTS = EmbedFileOptions()
# Where --server's API key is looked for without --api-key-env (the server's own variable,
# EMBEDSERVE_API_KEYS, lists the keys it accepts; this one holds the key a client sends).
API_KEY_ENVS = ("EMBEDSERVE_API_KEY", "OPENAI_API_KEY")


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
        metavar="N",
        help="bytes the --cache-dir entries may take, least recently used dropped first "
        f"(default: {_DEFAULTS.cache_dir_bytes})",
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
    cmd.add_argument(
        "--ray-cpus-per-actor", type=positive_float, metavar="N", help="with --ray (default: 1)"
    )
    cmd.add_argument(
        "--ray-gpus-per-actor", type=non_negative_float, metavar="N", help="with --ray (default: 0)"
    )
    cmd.add_argument(
        "--server",
        metavar="URL",
        help="embed on a running embedserve (or any OpenAI-compatible server): its root "
        "(http://host:8000) or its /v1 base; POST /v1/embeddings with X-Priority: batch, "
        "--model naming the server's model",
    )
    cmd.add_argument(
        "--api-key-env",
        metavar="NAME",
        help=f"with --server: the environment variable holding the API key (default: "
        f"{' or '.join(API_KEY_ENVS)}; no key when neither is set)",
    )
    cmd.add_argument(
        "--server-concurrency",
        type=positive,
        metavar="N",
        help=f"with --server: requests in flight (default: {ServerOptions.concurrency})",
    )
    cmd.add_argument(
        "--server-retry-seconds",
        type=positive_float,
        metavar="S",
        help="with --server: how long one request may be refused (429/503, waited out by "
        f"Retry-After) before the job stops (default: {ServerOptions.retry_seconds:g})",
    )
    cmd.set_defaults(
        run=run_embed_file,
        usage_error=cmd.error,
        interrupted="interrupted: the parts written are kept; run the same command to resume",
    )
    return cmd


# Flags by dest: Ray's (they need --ray); those that only mean something where the model runs in
# this process or on Ray (refused with --server); the server client's (they need --server).
_RAY_ONLY = ("ray_actors", "ray_cpus_per_actor", "ray_gpus_per_actor")
_LOCAL_ONLY = ("cache_dir", "cache_dir_bytes", *_RAY_ONLY)
_SERVER_ONLY = ("api_key_env", "server_concurrency", "server_retry_seconds")


def refused_flags(args: argparse.Namespace) -> str | None:
    """Why these arguments cannot go together, or None: with --server the model's loading
    flags, the disk cache and Ray's are refused (the server loaded its model); the server's
    own flags need --server, and Ray's need --ray."""
    if args.server is None:
        needs = [("--server", _SERVER_ONLY), ("--ray", _RAY_ONLY if args.ray is None else ())]
        for needed, dests in needs:
            given = [_flag(dest) for dest in dests if getattr(args, dest) is not None]
            if given:
                return f"{', '.join(given)} cannot be used without {needed}"
        return None
    given = ["--ray"] if args.ray is not None else []
    given += [_flag(dest) for dest in _LOCAL_ONLY if getattr(args, dest) is not None]
    given += [
        flag_name(spec)
        for spec in settings_of(LoadSettings)
        if getattr(args, spec.name) is not None
    ]
    if not given:
        return None
    return (
        f"{', '.join(given)} cannot be used with --server: the server loads and runs the model "
        "(its own flags decide how); embed-file sends it the texts"
    )


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


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
        cache_dir_bytes=args.cache_dir_bytes or _DEFAULTS.cache_dir_bytes,
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

    refusal = refused_flags(args)
    if refusal is not None:
        args.usage_error(refusal)
    options = options_from_args(args)
    if args.server is not None:
        totals = _run_on_server(args, options)
    elif args.ray is None:
        totals = embed_file(args.input, args.out, options)
    else:
        totals = _run_on_ray(args, options)
    _check_something_embedded(args, totals)
    return 0


def _run_on_ray(args: argparse.Namespace, options: EmbedFileOptions) -> dict[str, Any]:
    if options.cache_dir is not None:
        raise SystemExit("embed-file: --cache-dir works with the in-process model, not with --ray")
    from embedserve.integrations.ray import embed_file_on_ray

    return embed_file_on_ray(
        args.input,
        args.out,
        options,
        address=args.ray,
        actors=args.ray_actors,
        **_given(num_cpus=args.ray_cpus_per_actor, num_gpus=args.ray_gpus_per_actor),
    )


def _check_something_embedded(args: argparse.Namespace, totals: Mapping[str, Any]) -> None:
    """A run that skipped every row of its input embedded nothing: its exit says so, or a
    script goes on with an empty output. (A --text-column that is not the field of a JSONL's
    texts skips every row, where a CSV's or Parquet's missing column is refused outright.)"""
    if totals["rows"] or not totals["skipped"]:
        return
    reasons = [reason for _, reason in totals["skipped_rows"]]
    field = f"no {args.text_column!r} field"
    hint = (
        f"; is --text-column {args.text_column!r} the field that holds the texts?"
        if reasons[:1] == [field]
        else ""
    )
    raise CorpusError(
        f"{args.input}: none of its {totals['skipped']:,} rows was embedded (all skipped, as "
        f"listed above){hint}"
    )


def api_key(name: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The key in variable `name` (which must be set), else in the first of API_KEY_ENVS that
    is: keys come from the environment, never from a flag that `ps` would show."""
    environ = os.environ if environ is None else environ
    if name is not None:
        value = environ.get(name, "").strip()
        if not value:
            raise ValueError(f"--api-key-env {name}: the variable {name} is not set or empty")
        return value
    return next((environ[n].strip() for n in API_KEY_ENVS if environ.get(n, "").strip()), None)


def _given(**values: Any) -> dict[str, Any]:
    """The flags given on the command line: the others keep the defaults of what they feed."""
    return {name: value for name, value in values.items() if value is not None}


def _run_on_server(args: argparse.Namespace, options: EmbedFileOptions) -> dict[str, Any]:
    from embedserve.corpus.remote import embed_file_on_server

    server = ServerOptions(
        url=args.server,
        api_key=api_key(args.api_key_env),
        **_given(concurrency=args.server_concurrency, retry_seconds=args.server_retry_seconds),
    )
    return embed_file_on_server(args.input, args.out, options, server=server)
