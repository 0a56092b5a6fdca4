"""Ollama's API: `POST /api/embed`, the legacy `POST /api/embeddings`, and `GET /api/tags` /
`GET /api/version` so clients that list models (Open WebUI) find ours. Errors are `{"error": ...}`.

Model names may carry Ollama's `:latest` tag; it is dropped before the lookup. `options` and
`keep_alive` are accepted and ignored (models stay loaded; there are no sampling options).

As Ollama: `/api/embed` answers unit-length vectors whatever the model's own setting (cut to
`dimensions` first), and a request with no input (`""`, `[]`, none) is how a client loads a
model: it gets no embeddings, not an error (the legacy route's empty `prompt` likewise).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Annotated, Any

import msgspec
import numpy as np
from litestar import Request, Response, get, post

from embedserve import __version__
from embedserve.inputs import Inputs
from embedserve.server.adapters.base import (
    compute,
    float_rows,
    json_response,
    raw_float_rows,
    read_struct,
)
from embedserve.server.auth import require_api_key
from embedserve.server.plumbing import state, timing_headers
from embedserve.server.registry import ModelRegistry, ServedModel
from embedserve.server.schemas import EmbeddingsRequest as Internal

Positive = Annotated[int, msgspec.Meta(ge=1)]
KeepAlive = str | float | None


class EmbedRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /api/embed`."""

    model: str
    # None, "" and []: no input, answered with no embeddings.
    input: str | list[str] | None = None
    truncate: bool | None = None
    dimensions: Positive | None = None
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive = None


class EmbedResponse(msgspec.Struct):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class LegacyEmbedRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The legacy `POST /api/embeddings`: one `prompt`, one `embedding`."""

    model: str
    prompt: str
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive = None


class LegacyEmbedResponse(msgspec.Struct):
    embedding: list[float]


class ModelDetails(msgspec.Struct):
    format: str
    family: str
    families: list[str] | None
    parameter_size: str
    quantization_level: str


class ModelTag(msgspec.Struct):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails


class TagsResponse(msgspec.Struct):
    models: list[ModelTag]


class VersionResponse(msgspec.Struct):
    version: str


def find_model(registry: ModelRegistry, name: str) -> ServedModel:
    model = registry.find(name)
    if model is None and name.endswith(":latest"):
        model = registry.find(name[: -len(":latest")])
    return model if model is not None else registry.get(name)  # get: the 404


def _first_row(vectors: np.ndarray, tokens: int) -> msgspec.Raw:
    return msgspec.Raw(float_rows(vectors[:1])[1:-1])  # `[[...]]` less the outer brackets


@post("/api/embed", before_request=require_api_key, status_code=200)
async def embed(request: Request[Any, Any, Any]) -> Response[bytes]:
    started = time.perf_counter()
    body = await read_struct(request, EmbedRequest)
    model = find_model(state(request).registry, body.model)
    # No input ("" or [] or none, as Ollama reads them) loads the model; a list holding an
    # empty text is an input, refused as on every route (one vector per input, or an error).
    if body.input in (None, "", []):
        model.require()  # a model still loading is a 503, as for any request
        return json_response(EmbedResponse(body.model, [], 0, 0, 0))
    texts = [body.input] if isinstance(body.input, str) else body.input
    internal = Internal(
        inputs=Inputs(texts=texts),
        model=model.id,
        truncate=body.truncate,
        dimensions=body.dimensions,
        normalize=True,  # Ollama normalizes every embedding, after the cut to `dimensions`
    )
    done = await compute(request, internal, model, raw_float_rows)
    # Ollama's durations are nanoseconds.
    response = EmbedResponse(
        model=body.model,
        embeddings=done.result,
        total_duration=int((time.perf_counter() - started) * 1e9),
        load_duration=0,
        prompt_eval_count=done.tokens,
    )
    return json_response(response, headers=timing_headers(done, started))


@post("/api/embeddings", before_request=require_api_key, status_code=200)
async def embeddings(request: Request[Any, Any, Any]) -> Response[bytes]:
    started = time.perf_counter()
    body = await read_struct(request, LegacyEmbedRequest)
    model = find_model(state(request).registry, body.model)
    if not body.prompt:
        model.require()
        return json_response(LegacyEmbedResponse(embedding=[]))
    internal = Internal(inputs=Inputs(texts=[body.prompt]), model=model.id)
    done = await compute(request, internal, model, _first_row, "prompt", single=True)
    return json_response(
        LegacyEmbedResponse(embedding=done.result),
        headers=timing_headers(done, started),
    )


@get("/api/tags", before_request=require_api_key)
async def tags(request: Request[Any, Any, Any]) -> Response[bytes]:
    models = []
    for model in state(request).registry.models:
        modified = datetime.fromtimestamp(model.created, tz=timezone.utc).isoformat()
        details = ModelDetails(
            format="onnx",
            family="embedding",
            families=None,
            parameter_size="",
            quantization_level=state(request).config.quantize or "F32",
        )
        models.append(ModelTag(model.id, model.id, modified, 0, "", details))
    return json_response(TagsResponse(models))


@get("/api/version")
async def version() -> Response[bytes]:
    return json_response(VersionResponse(__version__))


ROUTES = [embed, embeddings, tags, version]
