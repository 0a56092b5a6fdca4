"""OpenAI's and Azure's embeddings APIs: `POST /v1/embeddings` and `POST /embeddings` (OpenAI),
`POST /openai/deployments/{deployment}/embeddings` (Azure OpenAI), `POST /models/embeddings` and
`POST /embeddings?api-version=` (Azure AI inference), and the model listings they come with
(`GET /v1/models`, `/models`, `/v1/models/{id}`, Azure AI inference's `GET /models/info`).

The body is parsed by hand in `server.schemas` (the request type is the internal one, and every
mistake gets an OpenAI-shaped 400 that names the field); the response body is encoded by
`server.encoding` on the pipeline's worker thread when it is large.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from litestar import Request, get, post
from litestar.status_codes import HTTP_400_BAD_REQUEST
from litestar.types import ASGIApp

from embedserve.server.adapters.base import compute
from embedserve.server.auth import require_api_key
from embedserve.server.encoding import embeddings_body
from embedserve.server.errors import ApiError, deployment_not_found
from embedserve.server.limits import check_field_id_count
from embedserve.server.plumbing import JsonAnswer, read_parsed, state, timing_headers
from embedserve.server.registry import ModelRegistry, ServedModel
from embedserve.server.schemas import (
    EmbeddingsRequest,
    check_api_version,
    check_extra_parameters,
    parse_embeddings_request,
)

# -- embeddings --


@post("/v1/embeddings", before_request=require_api_key, status_code=200)
async def openai_embeddings(request: Request[Any, Any, Any]) -> ASGIApp:
    return await _embeddings(request, "openai")


@post("/embeddings", before_request=require_api_key, status_code=200)
async def root_embeddings(request: Request[Any, Any, Any]) -> ASGIApp:
    """OpenAI without `api-version`; Azure AI inference (model optional) with it."""
    dialect = "azure-ai" if "api-version" in request.query_params else "openai"
    return await _embeddings(request, dialect)


@post("/models/embeddings", before_request=require_api_key, status_code=200)
async def azure_ai_embeddings(request: Request[Any, Any, Any]) -> ASGIApp:
    return await _embeddings(request, "azure-ai")


@post(
    "/openai/deployments/{deployment:str}/embeddings",
    before_request=require_api_key,
    status_code=200,
)
async def azure_openai_embeddings(request: Request[Any, Any, Any]) -> ASGIApp:
    # Path parameters are read from the request rather than declared: the declaration syntax
    # differs across Litestar 2.x releases (and the old one now warns).
    return await _embeddings(request, "azure-openai", request.path_params["deployment"])


async def _embeddings(
    request: Request[Any, Any, Any], dialect: str, deployment: str | None = None
) -> JsonAnswer:
    started = time.perf_counter()
    server = state(request)
    check_api_version(request.query_params.get("api-version"))
    policy = check_extra_parameters(request.headers.get("extra-parameters"))

    def parse(body: bytes) -> EmbeddingsRequest:
        check_field_id_count(body, server.config.limits, "input")
        return parse_embeddings_request(body, extra_parameters=policy)

    parsed = await read_parsed(request, parse)
    model = _model_for(server.registry, parsed, dialect, deployment)

    def render(vectors: np.ndarray, tokens: int) -> bytes:
        return embeddings_body(
            vectors, encoding_format=parsed.encoding_format, model=model.id, prompt_tokens=tokens
        )

    done = await compute(request, parsed, model, render)
    return JsonAnswer(done.result, timing_headers(done, started))


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


# -- models --


def _model_card(model: ServedModel) -> dict[str, Any]:
    return {"id": model.id, "object": "model", "created": model.created, "owned_by": "embedserve"}


@get(["/v1/models", "/models"], before_request=require_api_key)
async def list_models(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return {"object": "list", "data": [_model_card(m) for m in state(request).registry.models]}


@get("/v1/models/{model_id:path}", before_request=require_api_key)
async def retrieve_model(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return _model_card(state(request).registry.get(request.path_params["model_id"].lstrip("/")))


@get("/models/info", before_request=require_api_key)
async def model_info(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Azure AI inference's get_model_info; `?model=` picks a model, else the default one.
    (`GET /info` is TEI's, or this when it carries `api-version`: adapters/tei.py.)"""
    return azure_model_info(request)


def azure_model_info(request: Request[Any, Any, Any]) -> dict[str, Any]:
    check_api_version(request.query_params.get("api-version"))
    registry = state(request).registry
    name = request.query_params.get("model")
    model = registry.get(name) if name else registry.default
    return {"model_name": model.id, "model_type": "embeddings", "model_provider_name": "embedserve"}


ROUTES = [
    openai_embeddings,
    root_embeddings,
    azure_ai_embeddings,
    azure_openai_embeddings,
    list_models,
    retrieve_model,
    model_info,
]
