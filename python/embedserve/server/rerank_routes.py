"""HTTP routes for cross-encoders: Cohere/Jina and TEI reranking, vLLM-style pair scores.

`/v1/rerank` (what `cohere.Client` calls), `/v2/rerank` (`cohere.ClientV2`) and `/rerank` take
either body shape; same keys, error bodies, metrics and batching as the embeddings routes.
"""

from __future__ import annotations

import time
from typing import Any

from litestar import Request, Response, post

from embedserve.models.kind import RERANKER
from embedserve.server.auth import require_api_key
from embedserve.server.errors import invalid
from embedserve.server.plumbing import JSON, read_body, state, timing_headers, unless_disconnected
from embedserve.server.registry import ModelRegistry, ServedModel
from embedserve.server.rerank_schemas import TEI, parse_rerank_request, parse_score_request
from embedserve.server.rerank_service import RerankService

SERVICE_KEY = "rerank"


def _service(request: Request[Any, Any, Any]) -> RerankService:
    return request.app.state[SERVICE_KEY]


def _reranker_for(registry: ModelRegistry, name: str | None, required: bool) -> ServedModel:
    """The named model; without a name, the first reranker served (TEI serves one model)."""
    if name is not None:
        return registry.get(name)
    if required:
        raise invalid(
            "you must provide a model parameter", param="model", code="missing_required_parameter"
        )
    model = registry.first_ready(RERANKER)
    if model is None:
        if not registry.ready:
            return next(m for m in registry.models if not m.ready)  # its require() says 503
        raise invalid(
            "no reranker is served; start the server with a cross-encoder "
            "(--model PATH, config.json naming a *ForSequenceClassification)",
            param="model",
            code="model_not_found",
        )
    return model


async def _rerank(request: Request[Any, Any, Any], api_version: str) -> Response[bytes]:
    started = time.perf_counter()
    parsed = parse_rerank_request(await read_body(request))
    model = _reranker_for(state(request).registry, parsed.model, required=parsed.dialect != TEI)
    done = await unless_disconnected(request, _service(request).rerank(parsed, model, api_version))
    return Response(content=done.body, media_type=JSON, headers=timing_headers(done, started))


@post(["/v1/rerank", "/rerank"], guards=[require_api_key], status_code=200)
async def rerank_v1(request: Request[Any, Any, Any]) -> Response[bytes]:
    return await _rerank(request, "1")


@post("/v2/rerank", guards=[require_api_key], status_code=200)
async def rerank_v2(request: Request[Any, Any, Any]) -> Response[bytes]:
    return await _rerank(request, "2")


@post(["/v1/score", "/score"], guards=[require_api_key], status_code=200)
async def score(request: Request[Any, Any, Any]) -> Response[bytes]:
    started = time.perf_counter()
    parsed = parse_score_request(await read_body(request))
    model = _reranker_for(state(request).registry, parsed.model, required=False)
    done = await unless_disconnected(request, _service(request).score(parsed, model))
    return Response(content=done.body, media_type=JSON, headers=timing_headers(done, started))


RERANK_ROUTES = [rerank_v1, rerank_v2, score]
