"""Build the Litestar app: routes, OpenAI-shaped error handlers, models, batchers and metrics."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from litestar import Litestar
from litestar.datastructures import State
from uvicorn.config import STARTUP_FAILURE

from embedserve.engine import Engine
from embedserve.reranker import Reranker
from embedserve.server import access, memory
from embedserve.server.adapters import ROUTES as ADAPTER_ROUTES
from embedserve.server.auth import ApiKeys
from embedserve.server.config import ServerConfig
from embedserve.server.errors import EXCEPTION_HANDLERS
from embedserve.server.lifecycle import Drain
from embedserve.server.metrics import Metrics, RequestMetrics
from embedserve.server.openapi import ROUTES as OPENAPI_ROUTES
from embedserve.server.pipeline import RequestPipeline
from embedserve.server.plumbing import ServerState
from embedserve.server.registry import ModelRegistry
from embedserve.server.routes import ROUTES
from embedserve.server.token_arrays import TokenArrays

CONFIG_ENV = "EMBEDSERVE_SERVER_CONFIG"

log = logging.getLogger(__name__)


def create_app(
    config: ServerConfig | None = None, *, engines: Mapping[str, Engine | Reranker] | None = None
) -> Litestar:
    """An ASGI app serving `config.models`.

    Models load on a background thread at startup (`/ready` says when), unless `engines` maps
    model ids to engines already loaded — tests and benchmarks share one that way.
    """
    config = config or ServerConfig()
    metrics = Metrics()
    registry = ModelRegistry(config, metrics, engines)
    drain = Drain(config.drain_seconds, registry.stop, lambda: pipeline.active > 0)
    pipeline = RequestPipeline(config, metrics, drain)
    # Loaded now, so a server that cannot read token arrays fails at start, not at a request.
    token_arrays = TokenArrays.for_encoding(config.token_encoding)
    app = Litestar(
        route_handlers=[*ROUTES, *ADAPTER_ROUTES, *OPENAPI_ROUTES],
        exception_handlers=EXCEPTION_HANDLERS,
        on_startup=[registry.start, drain.attach],
        on_shutdown=[registry.close, pipeline.close],
        request_max_body_size=config.limits.max_body_bytes,
        state=State(
            {
                "server": ServerState(config, registry, pipeline, metrics, drain, token_arrays),
                "api_keys": ApiKeys(config.api_keys, config.batch_api_keys),
                "max_body_bytes": config.limits.max_body_bytes,
            }
        ),
        openapi_config=None,
        logging_config=None,
    )
    # Count every request, unmatched routes too (Litestar middleware only sees matched ones).
    app.asgi_handler = RequestMetrics(app.asgi_handler, metrics, app.asgi_router)
    return app


def app_from_env() -> Litestar:
    """uvicorn's factory in each worker process: the config travels in an environment variable."""
    # uvicorn has configured its own loggers from --log-level by now; ours follow the same level.
    level = logging.getLogger("uvicorn.error").getEffectiveLevel()
    logging.basicConfig(level=level, format="%(levelname)s:     %(name)s: %(message)s")
    access.install()
    memory.return_freed_memory()
    text = os.environ.get(CONFIG_ENV)
    try:
        return create_app(ServerConfig.from_json(text) if text else ServerConfig())
    except Exception:
        # uvicorn takes only a TypeError from a factory for a failed start; anything else
        # kills the worker with status 1, and a supervisor (--workers) starts another in its
        # place, forever (a damaged rank file: a new traceback every few seconds). A failed
        # start stops the supervisor, and `embedserve serve` exits with it (server/cli.py).
        log.exception("this worker cannot start")
        sys.exit(STARTUP_FAILURE)
