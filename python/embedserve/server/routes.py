"""Operational routes that belong to no API: liveness, readiness and Prometheus metrics.

The APIs' own routes are adapters (`server/adapters/`: OpenAI/Azure, TEI, Ollama, Cohere,
rerank); what handlers share is in `plumbing`.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE
from prometheus_client import CONTENT_TYPE_LATEST

from embedserve.server.errors import SERVER_ERROR, ApiError, error_response
from embedserve.server.plumbing import JSON, state

# -- operations (no key: probes and scrapers carry none) --


@get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@get("/ready")
async def ready(request: Request[Any, Any, Any]) -> Response[Any]:
    """Readiness: every model is loaded and batching, and the server is not draining."""
    server = state(request)
    registry = server.registry
    if server.drain.draining:
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
    return Response(state(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


ROUTES = [health, ready, metrics]
