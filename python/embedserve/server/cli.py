"""`embedserve serve`: flags → ServerConfig → uvicorn."""

from __future__ import annotations

import argparse
import os
from typing import Any

from embedserve.models import DEFAULT_MODEL
from embedserve.precision import add_precision_arguments
from embedserve.server.config import Limits, ModelSpec, ServerConfig, keys_from_env

_DEFAULTS = ServerConfig()
_LIMITS = Limits()


def add_serve_command(commands: Any) -> argparse.ArgumentParser:
    """Add `serve` to the `embedserve` subcommands (an argparse subparsers object)."""
    serve = commands.add_parser(
        "serve",
        help="serve embeddings over HTTP (OpenAI, Azure OpenAI and Azure AI inference APIs)",
        description="Serve embeddings over HTTP. Routes, flags and errors: docs/server.md.",
    )
    serve.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="SPEC[=ALIAS]",
        help="model to serve (catalog name, folder or hub repo id), optionally under "
        "another name; repeat to serve several (default: " + DEFAULT_MODEL + ")",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        default=[],
        metavar="KEY",
        help="accept this key (repeatable; also EMBEDSERVE_API_KEYS=k1,k2); "
        "without any key the server is open",
    )
    serve.add_argument(
        "--auto-truncate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="cut over-long inputs at the model's limit unless a request says "
        "truncate=false (default: on)",
    )
    serve.add_argument(
        "--allow-dimensions",
        action="store_true",
        help="accept `dimensions` for models not trained for it (Matryoshka)",
    )
    serve.add_argument(
        "--max-batch-tokens",
        type=_positive,
        metavar="N",
        default=None,
        help="padded tokens (longest × rows) per model batch (default: 1024 on the CPU, "
        "16384 on a GPU)",
    )
    serve.add_argument(
        "--max-batch-requests",
        type=_positive,
        metavar="N",
        default=_DEFAULTS.max_batch_requests,
        help="requests sharing one batch at most (default: %(default)s)",
    )
    serve.add_argument(
        "--max-queue",
        type=_positive,
        metavar="N",
        default=_DEFAULTS.max_queue,
        help="inputs waiting per model before new requests get 429 (default: %(default)s)",
    )
    serve.add_argument(
        "--max-inputs",
        type=_positive,
        metavar="N",
        default=_LIMITS.max_inputs,
        help="inputs per request (default: %(default)s)",
    )
    serve.add_argument(
        "--max-input-tokens",
        type=_positive,
        metavar="N",
        default=_LIMITS.max_input_tokens,
        help="tokens per input before truncation (default: %(default)s)",
    )
    serve.add_argument(
        "--max-request-tokens",
        type=_positive,
        metavar="N",
        default=_LIMITS.max_request_tokens,
        help="tokens per request (default: %(default)s)",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=_positive,
        metavar="N",
        default=_LIMITS.max_body_bytes,
        help="request body size; larger bodies get 413 (default: %(default)s)",
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        metavar="N",
        default=1,
        help="uvicorn worker processes, each loading its own models (default: 1)",
    )
    serve.add_argument(
        "--providers",
        help="ONNX Runtime providers: cpu, cuda, or a provider name "
        "(default: CUDA when a GPU is present, else CPU)",
    )
    serve.add_argument(
        "--intra-op-threads",
        type=_positive,
        metavar="N",
        help="ONNX Runtime threads per model (default: ONNX Runtime's choice)",
    )
    serve.add_argument(
        "--quantize",
        choices=["int8"],
        help="older spelling of --precision int8",
    )
    add_precision_arguments(serve)
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.set_defaults(run=run_serve)
    return serve


def config_from_args(
    args: argparse.Namespace, environ: dict[str, str] | None = None
) -> ServerConfig:
    models = tuple(ModelSpec.parse(m) for m in args.models) if args.models else _DEFAULTS.models
    keys = tuple(dict.fromkeys([*args.api_keys, *keys_from_env(environ)]))
    return ServerConfig(
        models=models,
        api_keys=keys,
        auto_truncate=args.auto_truncate,
        allow_dimensions=args.allow_dimensions,
        max_batch_tokens=args.max_batch_tokens,
        max_batch_requests=args.max_batch_requests,
        max_queue=args.max_queue,
        providers=args.providers,
        intra_op_threads=args.intra_op_threads,
        quantize=args.quantize,
        precision=args.precision,
        runtime=args.runtime,
        limits=Limits(
            max_inputs=args.max_inputs,
            max_input_tokens=args.max_input_tokens,
            max_request_tokens=args.max_request_tokens,
            max_body_bytes=args.max_body_bytes,
        ),
    )


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from embedserve.models import resolve_model_dir
    from embedserve.models.variants import graph_for
    from embedserve.precision import resolve_precision
    from embedserve.server.app import CONFIG_ENV

    config = config_from_args(args)
    # Fetch and compile models here, once, before workers start: a wrong name fails in seconds with
    # a clear message, and workers do not race to compile the same graph. No session or tokenizer
    # is created in this process; workers create their own after they start.
    precision = resolve_precision(config.precision, config.quantize)
    for model in config.models:
        graph_for(resolve_model_dir(model.spec), precision)
    os.environ[CONFIG_ENV] = config.to_json()
    uvicorn.run(
        "embedserve.server.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        timeout_graceful_shutdown=10,
    )
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
