"""`embedserve serve`: flags (generated from the settings declared in `config`) → ServerConfig →
uvicorn, with our HTTP protocol limits and a drain on SIGTERM."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from embedserve.cpu import THREADS_PER_CPU, max_model_threads
from embedserve.models import DEFAULT_MODEL
from embedserve.server.config import (
    API_KEY_FILE_ENV,
    API_KEYS_ENV,
    BATCH_API_KEY_FILE_ENV,
    BATCH_API_KEYS_ENV,
    MODEL_ENV,
    HttpLimits,
    Limits,
    ModelSpec,
    ServerConfig,
    declared_settings,
    keys_from_env,
    keys_from_file,
)
from embedserve.settings import ENV_PREFIX, add_setting, at_most, positive, setting_value

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
        "*ForSequenceClassification) serve /v1/rerank, ColBERT folders in PyLate's layout "
        "/embed_all, /v1/rerank and /v1/score (MaxSim), the rest /v1/embeddings "
        f"(default: {MODEL_ENV} if set, else " + DEFAULT_MODEL + ")",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=port_number, default=8000, help="0: any free port")
    serve.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        type=api_key,
        default=[],
        metavar="KEY",
        help="accept this key (repeatable; visible in `ps`: prefer --api-key-file or "
        f"{API_KEYS_ENV}=k1,k2); without any key (this or --batch-api-key) the server is open",
    )
    serve.add_argument(
        "--api-key-file",
        type=key_file,
        metavar="PATH",
        help=f"read accepted keys from this file, one a line (also {API_KEY_FILE_ENV})",
    )
    serve.add_argument(
        "--batch-api-key",
        action="append",
        dest="batch_api_keys",
        type=api_key,
        default=[],
        metavar="KEY",
        help="accept this key for batch work: every request it authenticates is batch priority, "
        "whatever its X-Priority or priority field says (repeatable; visible in `ps`: prefer "
        f"--batch-api-key-file or {BATCH_API_KEYS_ENV}=k1,k2); a key may not also be an --api-key",
    )
    serve.add_argument(
        "--batch-api-key-file",
        type=key_file,
        metavar="PATH",
        help="read batch keys from this file, one a line (also " + BATCH_API_KEY_FILE_ENV + ")",
    )
    for owner, spec in declared_settings():
        add_setting(serve, spec, owner=owner)
    serve.add_argument(
        "--workers",
        type=worker_count,
        metavar="N",
        default=1,
        help=f"uvicorn worker processes, each loading its own models, up to {THREADS_PER_CPU} per "
        "CPU (default: 1)",
    )
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.set_defaults(run=run_serve)
    return serve


def worker_count(text: str) -> int:
    """Worker processes: 1 to `max_model_threads()`. Each runs at least one model thread, so
    more would be more model threads than the CPUs can take; and each loads its own models:
    99999999999999999999 forked workers until the machine's memory was spent."""
    why = (
        f"{THREADS_PER_CPU} per CPU this process may use: each worker runs a model thread and "
        "holds its own models"
    )
    return at_most(positive(text), max_model_threads(), why)


def port_number(text: str) -> int:
    """A TCP port; checked here because the socket layer takes a larger one modulo 65536."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 0 to 65535, got {value}")
    return value


def api_key(text: str) -> str:
    """A key given as a flag. A blank one is refused: no request can send it, so the server would
    start locked to everyone (blank keys in a file or the environment are skipped instead)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be blank (leave the flag out for no key)")
    return text


def key_file(text: str) -> str:
    """A key file given as a flag. A blank path (a shell's unset variable) is refused: read as
    no file, it started the server open to anyone."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be blank (leave the flag out for no key file)")
    return text


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    environ = os.environ if environ is None else environ
    specs = args.models or ([environ[MODEL_ENV]] if environ.get(MODEL_ENV, "").strip() else [])
    models = tuple(ModelSpec.parse(m) for m in specs) if specs else _DEFAULTS.models
    values: dict[str, dict[str, Any]] = {"": {}, "limits": {}, "http": {}}
    for owner, spec in declared_settings():
        values[owner][spec.name] = setting_value(args, spec, environ, owner=owner)
    return ServerConfig(
        models=models,
        api_keys=_keys(
            args.api_keys,
            ("--api-key-file", args.api_key_file),
            environ,
            API_KEYS_ENV,
            API_KEY_FILE_ENV,
        ),
        batch_api_keys=_keys(
            args.batch_api_keys,
            ("--batch-api-key-file", args.batch_api_key_file),
            environ,
            BATCH_API_KEYS_ENV,
            BATCH_API_KEY_FILE_ENV,
        ),
        limits=Limits(**values["limits"]),
        http=HttpLimits(**values["http"]),
        **values[""],
    )


def _keys(
    flags: list[str],
    file_flag: tuple[str, str | None],
    environ: Mapping[str, str],
    keys_env: str,
    key_file_env: str,
) -> tuple[str, ...]:
    """One kind of key from its three sources: flags, the variable `keys_env`, and a file
    (`file_flag`: the flag's name and value, else the variable `key_file_env`); each key once,
    in that order. A key file that cannot be read or names no key is refused, naming where it
    was given: read as no keys, it left the server open to anyone."""
    flag, key_file = file_flag
    source = f"{flag} {key_file}"
    if not key_file:
        key_file = environ.get(key_file_env)
        source = f"{key_file_env}={key_file!r}"
    from_file: tuple[str, ...] = ()
    if key_file:
        try:
            from_file = keys_from_file(key_file)
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ValueError(f"{source}: cannot be read ({reason})") from None
        if not from_file:
            # A file given for keys that holds none would leave the server open to anyone.
            raise ValueError(
                f"{source}: names no key (every line is blank or a comment); give a file of "
                "keys, one a line, or leave it out for a server open to anyone"
            )
    return tuple(dict.fromkeys([*flags, *keys_from_env(environ, keys_env), *from_file]))


def build_graphs(config: ServerConfig) -> list[Path]:
    """Fetch and compile every model here, once, before workers start: a wrong name fails in
    seconds with a clear message, and workers do not race to compile the same graph, as each
    model's is the one its kind will load with these options (kinds.build_graph). No session or
    tokenizer is created in this process; workers create their own after they start."""
    from embedserve.kinds import build_graph
    from embedserve.loading import LoadOptions

    # The options the server's loader gives each model (registry.ModelRegistry._load_all).
    return [build_graph(m.spec, LoadOptions.of(config, name=m.id))[1] for m in config.models]


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    from embedserve.server.app import CONFIG_ENV
    from embedserve.server.http import PROTOCOL
    from embedserve.server.lifecycle import GRACE_SECONDS
    from embedserve.server.token_arrays import TokenArrays

    config = config_from_args(args)
    build_graphs(config)
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
        supervisor = _supervisor_class(Multiprocess)(uv_config, sockets=[uv_config.bind_socket()])
        supervisor.run()
        return STARTUP_FAILURE if supervisor.a_worker_failed_to_start() else 0
    server = uvicorn.Server(uv_config)
    server.run()
    return 0 if server.started else STARTUP_FAILURE


def _supervisor_class(base: type) -> type:
    from uvicorn.config import STARTUP_FAILURE

    class Supervisor(base):  # type: ignore[misc,valid-type]
        """uvicorn's worker supervisor, but it closes its own copy of the listening socket
        before telling the workers to stop. Otherwise the kernel keeps completing connections
        on that copy during the drain that no worker will ever accept: they hang until the
        supervisor exits. Closed, new connections are refused as with one worker."""

        def terminate_all(self) -> None:
            for sock in self.sockets:
                sock.close()
            super().terminate_all()

        def a_worker_failed_to_start(self) -> bool:
            """Whether the supervisor stopped because a worker failed to start (uvicorn stops
            then, as a restart would fail the same way, and keeps that worker in its list)."""
            return any(p.exitcode == STARTUP_FAILURE for p in self.processes)

    return Supervisor
