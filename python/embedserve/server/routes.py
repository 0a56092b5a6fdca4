"""HTTP routes: OpenAI, Azure OpenAI and Azure AI inference embeddings; models; health; metrics.

Embeddings handlers take the raw `Request` so Litestar never parses the body: `schemas` decodes
it, so every malformed body gets our error shape and message.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from litestar import Request, Response, get, post
from litestar.exceptions import InternalServerException
from litestar.status_codes import HTTP_400_BAD_REQUEST, HTTP_503_SERVICE_UNAVAILABLE
from prometheus_client import CONTENT_TYPE_LATEST

from embedserve.server.auth import require_api_key
from embedserve.server.config import ServerConfig
from embedserve.server.errors import (
    SERVER_ERROR,
    ApiError,
    ClientDisconnected,
    deployment_not_found,
    error_response,
)
from embedserve.server.lifecycle import Drain
from embedserve.server.metrics import Metrics
from embedserve.server.registry import ModelRegistry, ServedModel
from embedserve.server.schemas import (
    EmbeddingsRequest,
    check_api_version,
    check_extra_parameters,
    parse_embeddings_request,
)
from embedserve.server.service import Embedded, EmbeddingService

T = TypeVar("T")
JSON = "application/json"


@dataclass(frozen=True)
class ServerState:
    """What handlers need, kept in `app.state["server"]`."""

    config: ServerConfig
    registry: ModelRegistry
    service: EmbeddingService
    metrics: Metrics
    drain: Drain


def _state(request: Request[Any, Any, Any]) -> ServerState:
    return request.app.state["server"]


# -- embeddings --


@post("/v1/embeddings", guards=[require_api_key], status_code=200)
async def openai_embeddings(request: Request[Any, Any, Any]) -> Response[bytes]:
    return await _embeddings(request, "openai")


@post("/embeddings", guards=[require_api_key], status_code=200)
async def root_embeddings(request: Request[Any, Any, Any]) -> Response[bytes]:
    """OpenAI without `api-version`; Azure AI inference (model optional) with it."""
    dialect = "azure-ai" if "api-version" in request.query_params else "openai"
    return await _embeddings(request, dialect)


@post("/models/embeddings", guards=[require_api_key], status_code=200)
async def azure_ai_embeddings(request: Request[Any, Any, Any]) -> Response[bytes]:
    return await _embeddings(request, "azure-ai")


@post("/openai/deployments/{deployment:str}/embeddings", guards=[require_api_key], status_code=200)
async def azure_openai_embeddings(request: Request[Any, Any, Any]) -> Response[bytes]:
    # Path parameters are read from the request rather than declared: the declaration syntax
    # differs across Litestar 2.x releases (and the old one now warns).
    return await _embeddings(request, "azure-openai", request.path_params["deployment"])


async def _embeddings(
    request: Request[Any, Any, Any], dialect: str, deployment: str | None = None
) -> Response[bytes]:
    started = time.perf_counter()
    state = _state(request)
    check_api_version(request.query_params.get("api-version"))
    policy = check_extra_parameters(request.headers.get("extra-parameters"))
    state.service.refuse_early(state.registry.models)
    try:
        body = await request.body()
    except InternalServerException as exc:  # Litestar's way to say the client left mid-body
        raise ClientDisconnected() from exc
    parsed = parse_embeddings_request(body, extra_parameters=policy)
    model = _model_for(state.registry, parsed, dialect, deployment)
    done = await _unless_disconnected(request, state.service.embed(parsed, model))
    return Response(content=done.body, media_type=JSON, headers=_timing_headers(done, started))


def _model_for(
    registry: ModelRegistry, request: EmbeddingsRequest, dialect: str, deployment: str | None
) -> ServedModel:
    if dialect == "azure-openai":
        # The deployment names the model; the body's `model` (the SDK repeats it) is not consulted.
        model = registry.find(deployment or "")
        if model is None:
            raise deployment_not_found(deployment or "")
        return model
    if request.model is not None:
        return registry.get(request.model)
    if dialect == "azure-ai":
        return registry.default
    raise ApiError(
        HTTP_400_BAD_REQUEST,
        "you must provide a model parameter",
        param="model",
        code="missing_required_parameter",
    )


async def _unless_disconnected(request: Request[Any, Any, Any], work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (which drops its queued inputs) if the client hangs up.

    Neither uvicorn nor Litestar cancels a handler when its client goes away, so listen for
    `http.disconnect` on the ASGI channel ourselves; the body is already read, so nothing else
    arrives on it.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise ClientDisconnected()
    try:
        return task.result()
    finally:
        # An exception raised here holds this frame in its traceback, and this frame holds the
        # task, which holds the exception: a cycle that kept each refused request's body and
        # texts (32 MB for a 16 MB body) until the next full garbage collection.
        del task, watcher


async def _disconnect(request: Request[Any, Any, Any]) -> None:
    """Return when the client disconnects; never, if the server sends anything else (a server
    that answered `receive` at once with empty messages would otherwise make this spin)."""
    if (await request.receive())["type"] != "http.disconnect":
        await asyncio.get_running_loop().create_future()


def _timing_headers(done: Embedded, started: float) -> dict[str, str]:
    """Per-request phases in milliseconds, under TEI's header names."""
    total = time.perf_counter() - started
    return {
        "x-tokenization-time": f"{done.tokenization_seconds * 1e3:.3f}",
        "x-queue-time": f"{done.queue_seconds * 1e3:.3f}",
        "x-inference-time": f"{done.inference_seconds * 1e3:.3f}",
        "x-total-time": f"{total * 1e3:.3f}",
    }


# -- models --


def _model_card(model: ServedModel) -> dict[str, Any]:
    return {"id": model.id, "object": "model", "created": model.created, "owned_by": "embedserve"}


@get(["/v1/models", "/models"], guards=[require_api_key])
async def list_models(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return {"object": "list", "data": [_model_card(m) for m in _state(request).registry.models]}


@get("/v1/models/{model_id:path}", guards=[require_api_key])
async def retrieve_model(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return _model_card(_state(request).registry.get(request.path_params["model_id"].lstrip("/")))


@get("/models/info", guards=[require_api_key])
async def model_info(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Azure AI inference's get_model_info; `?model=` picks a model, else the default one.
    (`GET /info` is TEI's, or this when it carries `api-version`: adapters/tei.py.)"""
    return azure_model_info(request)


def azure_model_info(request: Request[Any, Any, Any]) -> dict[str, Any]:
    check_api_version(request.query_params.get("api-version"))
    registry = _state(request).registry
    name = request.query_params.get("model")
    model = registry.get(name) if name else registry.default
    return {"model_name": model.id, "model_type": "embeddings", "model_provider_name": "embedserve"}


# -- operations (no key: probes and scrapers carry none) --


@get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@get("/ready")
async def ready(request: Request[Any, Any, Any]) -> Response[Any]:
    """Readiness: every model is loaded and batching, and the server is not draining."""
    state = _state(request)
    registry = state.registry
    if state.drain.draining:
        return error_response(
            ApiError(
                HTTP_503_SERVICE_UNAVAILABLE,
                "The server is shutting down",
                type=SERVER_ERROR,
                code="shutting_down",
                headers={"Retry-After": "5"},
            )
        )
    if registry.ready:
        return Response(
            {"status": "ready", "models": [m.id for m in registry.models]}, media_type=JSON
        )
    waiting = [f"{m.id} ({m.error})" if m.error else m.id for m in registry.models if not m.ready]
    failed = any(m.error for m in registry.models)
    return error_response(
        ApiError(
            HTTP_503_SERVICE_UNAVAILABLE,
            f"{'Failed to load' if failed else 'Still loading'}: {', '.join(waiting)}",
            type=SERVER_ERROR,
            code="model_load_failed" if failed else "model_not_ready",
            headers={"Retry-After": "5"},
        )
    )


@get("/metrics")
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    return Response(_state(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


ROUTES = [
    openai_embeddings,
    root_embeddings,
    azure_ai_embeddings,
    azure_openai_embeddings,
    list_models,
    retrieve_model,
    model_info,
    health,
    ready,
    metrics,
]
