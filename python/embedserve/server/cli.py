"""`embedserve serve`: flags (generated from the settings declared in `config`) → ServerConfig →
uvicorn, with our HTTP protocol limits and a drain on SIGTERM."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import Field
from typing import Any

from embedserve.models import DEFAULT_MODEL
from embedserve.server.config import (
    API_KEY_FILE_ENV,
    API_KEYS_ENV,
    ENV_PREFIX,
    HttpLimits,
    Limits,
    ModelSpec,
    ServerConfig,
    declared_settings,
    keys_from_env,
    keys_from_file,
)

_DEFAULTS = ServerConfig()


def add_serve_command(commands: Any) -> argparse.ArgumentParser:
    """Add `serve` to the `embedserve` subcommands (an argparse subparsers object)."""
    serve = commands.add_parser(
        "serve",
        help="serve embeddings over HTTP (OpenAI, Azure OpenAI and Azure AI inference APIs)",
        description="Serve embeddings over HTTP. Every setting flag also reads "
        f"{ENV_PREFIX}<NAME> from the environment (for example {ENV_PREFIX}MAX_WAIT_SECONDS).",
    )
    serve.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="SPEC[=ALIAS]",
        help="model to serve (catalog name, folder or hub repo id), optionally under "
        "another name; repeat to serve several. Cross-encoders (config.json names a "
        "*ForSequenceClassification) serve /v1/rerank, the rest /v1/embeddings "
        "(default: " + DEFAULT_MODEL + ")",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        default=[],
        metavar="KEY",
        help="accept this key (repeatable; visible in `ps`: prefer --api-key-file or "
        f"{API_KEYS_ENV}=k1,k2); without any key the server is open",
    )
    serve.add_argument(
        "--api-key-file",
        metavar="PATH",
        help=f"read accepted keys from this file, one a line (also {API_KEY_FILE_ENV})",
    )
    for owner, spec in declared_settings():
        _add_setting(serve, owner, spec)
    serve.add_argument(
        "--workers",
        type=_positive,
        metavar="N",
        default=1,
        help="uvicorn worker processes, each loading its own models (default: 1)",
    )
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.set_defaults(run=run_serve)
    return serve


def flag_name(spec: Field[Any]) -> str:
    return "--" + spec.name.replace("_", "-")


def env_name(spec: Field[Any]) -> str:
    return ENV_PREFIX + spec.name.upper()


def _add_setting(parser: argparse.ArgumentParser, owner: str, spec: Field[Any]) -> None:
    """One declared setting as a flag; its default is the field's, unless the env var is set
    (read at parse time, in `config_from_args`, so tests can pass their own environment)."""
    meta = spec.metadata
    dest = f"{owner}.{spec.name}" if owner else spec.name
    default = spec.default
    shown = "on" if default is True else "off" if default is False else default
    help_text = meta["help"] + ("" if default is None else f" (default: {shown})")
    if isinstance(default, bool):
        parser.add_argument(
            flag_name(spec),
            dest=dest,
            action=argparse.BooleanOptionalAction,
            default=None,
            help=help_text.replace("%", "%%"),
        )
        return
    parser.add_argument(
        flag_name(spec),
        dest=dest,
        type=_setting_type(spec),
        choices=meta["choices"],
        metavar=meta["metavar"] if meta["choices"] is None else None,
        default=None,
        help=help_text.replace("%", "%%"),
    )


def _setting_type(spec: Field[Any]) -> Callable[[str], Any]:
    kind = spec.metadata["type"] or type(spec.default)
    if kind is int:
        return _positive
    if kind is float:
        return _positive_float
    return kind


def _setting_value(
    args: argparse.Namespace, owner: str, spec: Field[Any], environ: Mapping[str, str]
) -> Any:
    """The flag if given, else the environment variable, else the field's default."""
    dest = f"{owner}.{spec.name}" if owner else spec.name
    value = getattr(args, dest)
    if value is not None:
        return value
    text = environ.get(env_name(spec))
    if text is None or text == "":
        return spec.default
    if isinstance(spec.default, bool):
        if text.lower() not in _BOOLEANS:
            raise ValueError(f"{env_name(spec)}={text!r}: expected true or false")
        return _BOOLEANS[text.lower()]
    try:
        value = _setting_type(spec)(text)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise ValueError(f"{env_name(spec)}={text!r}: {exc}") from exc
    choices = spec.metadata["choices"]
    if choices is not None and value not in choices:
        raise ValueError(f"{env_name(spec)}={text!r}: expected one of {', '.join(choices)}")
    return value


_BOOLEANS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    environ = os.environ if environ is None else environ
    models = tuple(ModelSpec.parse(m) for m in args.models) if args.models else _DEFAULTS.models
    key_file = args.api_key_file or environ.get(API_KEY_FILE_ENV)
    from_file = keys_from_file(key_file) if key_file else ()
    keys = tuple(dict.fromkeys([*args.api_keys, *keys_from_env(environ), *from_file]))
    values: dict[str, dict[str, Any]] = {"": {}, "limits": {}, "http": {}}
    for owner, spec in declared_settings():
        values[owner][spec.name] = _setting_value(args, owner, spec, environ)
    return ServerConfig(
        models=models,
        api_keys=keys,
        limits=Limits(**values["limits"]),
        http=HttpLimits(**values["http"]),
        **values[""],
    )


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from embedserve.models import resolve_model_dir
    from embedserve.models.variants import graph_for
    from embedserve.precision import resolve_precision
    from embedserve.server.app import CONFIG_ENV
    from embedserve.server.http import PROTOCOL
    from embedserve.server.lifecycle import GRACE_SECONDS
    from embedserve.server.token_arrays import TokenArrays

    config = config_from_args(args)
    # Fetch and compile models here, once, before workers start: a wrong name fails in seconds with
    # a clear message, and workers do not race to compile the same graph. No session or tokenizer
    # is created in this process; workers create their own after they start.
    precision = resolve_precision(config.precision, config.quantize)
    for model in config.models:
        graph_for(
            resolve_model_dir(model.spec, compile=config.compile), precision, compile=config.compile
        )
    # Workers read the config from here; keys travel with it, never on a command line.
    # The same for tiktoken's rank files: fetched here or a clear error now, not at a request.
    TokenArrays.for_encoding(config.token_encoding)
    os.environ[CONFIG_ENV] = config.to_json()
    uv_config = uvicorn.Config(
        "embedserve.server.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        http=PROTOCOL,
        limit_concurrency=config.http.max_connections,
        # uvicorn hears of the signal only when our drain is over (server/lifecycle.py).
        timeout_graceful_shutdown=int(GRACE_SECONDS),
    )
    if args.workers > 1:
        _Supervisor = _supervisor_class(Multiprocess)
        _Supervisor(uv_config, sockets=[uv_config.bind_socket()]).run()
        return 0
    server = uvicorn.Server(uv_config)
    server.run()
    return 0 if server.started else 3


def _supervisor_class(base: type) -> type:
    class Supervisor(base):  # type: ignore[misc,valid-type]
        """uvicorn's worker supervisor, but it closes its own copy of the listening socket
        before telling the workers to stop. Otherwise the kernel keeps completing connections
        on that copy during the drain that no worker will ever accept: they hang until the
        supervisor exits. Closed, new connections are refused as with one worker."""

        def terminate_all(self) -> None:
            for sock in self.sockets:
                sock.close()
            super().terminate_all()

    return Supervisor


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {value}")
    return value
