"""Cohere's v2 embed API: `POST /v2/embed` (`cohere.ClientV2(base_url=...)`).

`input_type` picks the model's prompt of the matching name when it has one (`search_query` →
`query`, `search_document` → `document` or `passage`, `classification`, `clustering`), else none.
`embedding_types` returns any of float, int8, uint8, binary, ubinary (embedserve.quantization)
and base64 (little-endian float32, as OpenAI's). `truncate`: `END` (default) cuts the end of an
over-long text, `START` its start, `NONE` refuses it; `max_tokens` lowers "over-long" from the
model's limit to that many tokens (special tokens included, as the model's limit counts them).
`priority` (Cohere's: 0, the default, is the highest; larger numbers wait) maps onto
embedserve's two classes: 0 keeps the request's own (the `X-Priority` header's, else
interactive), anything larger is batch work. Errors are `{"message": ...}`.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
from litestar import Request, Response, post

from embedserve import _core
from embedserve.admission import Priority
from embedserve.engine import Engine, ModelInfo
from embedserve.inputs import Inputs
from embedserve.quantization import quantize
from embedserve.server.adapters.base import (
    compute,
    json_response,
    raw_float_rows,
    read_struct,
)
from embedserve.server.auth import require_api_key
from embedserve.server.errors import invalid
from embedserve.server.plumbing import state, timing_headers
from embedserve.server.schemas import EmbeddingsRequest as Internal

InputType = Literal["search_document", "search_query", "classification", "clustering"]
EmbeddingType = Literal["float", "int8", "uint8", "binary", "ubinary", "base64"]
Positive = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]

# Cohere's input types → prompt names models use for them, first match wins.
PROMPTS: dict[str, tuple[str, ...]] = {
    "search_query": ("search_query", "query"),
    "search_document": ("search_document", "document", "passage"),
    "classification": ("classification",),
    "clustering": ("clustering",),
}


class EmbedRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v2/embed` (texts only)."""

    model: str
    texts: list[str]
    input_type: InputType
    embedding_types: list[EmbeddingType] | None = None
    output_dimension: Positive | None = None
    # Each text's tokens at most (`max_tokens_for`); over it, `truncate` cuts or refuses.
    max_tokens: Positive | None = None
    truncate: Literal["NONE", "START", "END"] = "END"
    priority: NonNegative = 0


class Embeddings(msgspec.Struct, omit_defaults=True, rename={"float_": "float"}):
    float_: list[list[float]] | None = None
    int8: list[list[int]] | None = None
    uint8: list[list[int]] | None = None
    binary: list[list[int]] | None = None
    ubinary: list[list[int]] | None = None
    base64: list[str] | None = None


class ApiVersion(msgspec.Struct):
    version: str


class BilledUnits(msgspec.Struct):
    input_tokens: int


class Meta(msgspec.Struct):
    api_version: ApiVersion
    billed_units: BilledUnits


class EmbedResponse(msgspec.Struct):
    id: str
    embeddings: Embeddings
    texts: list[str]
    meta: Meta
    response_type: Literal["embeddings_by_type"] = "embeddings_by_type"


def prompt_for(input_type: str, info: ModelInfo) -> str | None:
    return next((name for name in PROMPTS[input_type] if name in info.prompts), None)


def max_tokens_for(max_tokens: int | None, engine: Engine) -> int | None:
    """Cohere's `max_tokens`, counted as the model's limit is (its special tokens included):
    at most that limit, and room for at least one token of text."""
    if max_tokens is None:
        return None
    limit, specials = engine.model_info.max_tokens, engine.tokenizer.specials
    if not specials < max_tokens <= limit:
        raise invalid(
            f"max_tokens is {max_tokens}; {engine.model_info.name} takes from {specials + 1} to "
            f"{limit} tokens per text ({specials} of them its special tokens)",
            param="max_tokens",
        )
    return max_tokens


def _embeddings(vectors: np.ndarray, kinds: list[str]) -> Embeddings:
    """The vectors in each asked type (on the pipeline's worker thread when they are many)."""
    embeddings = Embeddings()
    for kind in kinds:
        if kind == "float":
            embeddings.float_ = raw_float_rows(vectors)  # type: ignore[assignment]
        elif kind == "base64":
            embeddings.base64 = _core.encode_base64(vectors)
        else:
            setattr(embeddings, kind, quantize(vectors, kind).tolist())
    return embeddings


@post("/v2/embed", before_request=require_api_key, status_code=200)
async def embed(request: Request[Any, Any, Any]) -> Response[bytes]:
    started = time.perf_counter()
    body = await read_struct(request, EmbedRequest)
    model = state(request).registry.get(body.model)
    engine, _ = model.require()
    internal = Internal(
        inputs=Inputs(texts=body.texts),
        model=model.id,
        dimensions=body.output_dimension,
        truncate=body.truncate != "NONE",
        truncation_direction="left" if body.truncate == "START" else "right",
        prompt_name=prompt_for(body.input_type, engine.model_info),
        priority=Priority.BATCH if body.priority > 0 else None,
        max_tokens=max_tokens_for(body.max_tokens, engine),
    )
    kinds = list(dict.fromkeys(body.embedding_types or ["float"]))
    done = await compute(
        request,
        internal,
        model,
        lambda vectors, _: _embeddings(vectors, kinds),
        "texts",
        dimensions_param="output_dimension",
    )
    response = EmbedResponse(
        id=str(uuid.uuid4()),
        embeddings=done.result,
        texts=body.texts,
        meta=Meta(ApiVersion("2"), BilledUnits(done.tokens)),
    )
    return json_response(response, headers=timing_headers(done, started))


ROUTES = [embed]
