"""`GET /openapi.json` and `GET /docs`: the API description, built from the request and response
types the routes use (the adapters' msgspec Structs; for the routes whose body is parsed by hand —
OpenAI's in `schemas.py`, rerank and score in `adapters/rerank_schemas.py` — Structs below that a test holds
equal to that parser's field list).

Every route the app answers is in `OPERATIONS`, each error in its route's own shape, and each
guarded route asks for a key: tests/server/test_openapi.py compares this table with the app's
route table, and runs schemathesis against the document (every response must be one the document
describes, and none may be a server error).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get

from embedserve import __version__
from embedserve.admission import Priority
from embedserve.server.adapters import classify, cohere, ollama, sparse, tei, token_vectors
from embedserve.server.plumbing import PRIORITY_HEADER_NAME
from embedserve.server.schemas import API_VERSION, EXTRA_PARAMETERS
from embedserve.server.shapes import (
    TEI,
    TEI_CLIENT_STATUSES,
    CohereError,
    OllamaError,
    OpenAIError,
    TeiError,
    api_for_path,
)

JSON = "application/json"
_REF = "#/components/schemas/"
Positive = Annotated[int, msgspec.Meta(ge=1)]
_TOKENS = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
# A string, or a non-empty array of one kind: strings, token ids, or token arrays (a mixed array is
# refused: `inputs.classify_inputs`). msgspec's unions hold one array type, hence the schema here.
Input = Annotated[
    Any,
    msgspec.Meta(
        extra_json_schema={
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
                _TOKENS,
                {"type": "array", "items": _TOKENS, "minItems": 1},
            ]
        }
    ),
]
EncodingFormat = Literal["float", "base64", "int8", "uint8", "binary", "ubinary"]
# embedserve's extension (the `X-Priority` header does the same on every route): batch work is
# refused first under load and served when no interactive work waits.
RequestPriority = Literal["interactive", "batch"]

# -- OpenAI and Azure --


class EmbeddingsFields(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """OpenAI's embeddings request, with embedserve's extensions (truncate, truncation_direction,
    normalize, prompt_name, the byte encodings) and Azure AI inference's input_type. Unknown fields
    are refused unless the `extra-parameters` header says `drop` or `pass-through`."""

    input: Input
    encoding_format: EncodingFormat | None = None
    dimensions: Positive | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    input_type: Literal["text", "query", "document"] | None = None
    extra_body: dict[str, Any] | None = None
    truncate: bool | None = None
    truncation_direction: Literal["right", "left"] | None = None
    normalize: bool | None = None
    prompt_name: str | None = None
    priority: RequestPriority | None = None


class OpenAIEmbeddingsRequest(EmbeddingsFields, kw_only=True):
    """OpenAI's routes name the model."""

    model: str


class AzureEmbeddingsRequest(EmbeddingsFields, kw_only=True):
    """Azure's routes: without `model`, the first model served (the deployment's, in Azure
    OpenAI's path, where the body's `model` is not consulted)."""

    model: str | None = None


class OpenAIEmbedding(msgspec.Struct):
    object: Literal["embedding"]
    index: int
    # floats; base64 of little-endian float32; or byte values for int8/uint8/binary/ubinary.
    embedding: list[float] | str


class Usage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingsResponse(msgspec.Struct):
    object: Literal["list"]
    data: list[OpenAIEmbedding]
    model: str
    usage: Usage


class ModelCard(msgspec.Struct):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(msgspec.Struct):
    object: Literal["list"]
    data: list[ModelCard]


class AzureModelInfo(msgspec.Struct):
    """Azure AI inference's `get_model_info`."""

    model_name: str
    model_type: Literal["embeddings"]
    model_provider_name: str


# -- rerank (Cohere/Jina and TEI) and score (vLLM) --


class RerankDocument(msgspec.Struct):
    """A Cohere document object: `text` is ranked, other fields are echoed back as sent."""

    text: str


class CohereRerankRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Cohere v1/v2 and Jina: the body has `documents`."""

    model: str
    query: str
    documents: list[str | RerankDocument]
    top_n: Positive | None = None
    return_documents: bool | None = None
    max_tokens_per_doc: Positive | None = None
    truncate: bool | None = None
    raw_scores: bool | None = None
    priority: RequestPriority | None = None
    # An LLM reranker's task (its prompt's <Instruct>); a cross-encoder answers 400.
    instruction: str | None = None


class TeiRerankRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """TEI: the body has `texts`; without `model`, the first reranker served answers."""

    query: str
    texts: list[str]
    model: str | None = None
    truncate: bool | None = None
    # Pairs are cut the way the cross-encoder was trained: only TEI's default is served.
    truncation_direction: Literal["right"] | None = None
    raw_scores: bool | None = None
    # An LLM reranker's task (its prompt's <Instruct>); a cross-encoder answers 400.
    instruction: str | None = None
    return_text: bool | None = None
    priority: RequestPriority | None = None


class CohereRerankResult(msgspec.Struct, omit_defaults=True):
    index: int
    relevance_score: float
    document: RerankDocument | msgspec.UnsetType = msgspec.UNSET  # with return_documents


class SearchUnits(msgspec.Struct):
    search_units: int


class RerankTokens(msgspec.Struct):
    input_tokens: int
    output_tokens: int


class CohereRerankMeta(msgspec.Struct):
    api_version: cohere.ApiVersion
    billed_units: SearchUnits
    tokens: RerankTokens


class CohereRerankResponse(msgspec.Struct):
    """Cohere's `id`, `results` and `meta`, with Jina's `model` and `usage` alongside."""

    id: str
    model: str
    results: list[CohereRerankResult]
    meta: CohereRerankMeta
    usage: Usage


class TeiRank(msgspec.Struct, omit_defaults=True):
    index: int
    score: float
    text: str | msgspec.UnsetType = msgspec.UNSET  # with return_text


class ScoreRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """vLLM's score request: one text_1 against every text_2, or two lists pairwise."""

    text_1: str | list[str]
    text_2: str | list[str]
    model: str | None = None
    truncate: bool | None = None
    raw_scores: bool | None = None
    priority: RequestPriority | None = None
    # An LLM reranker's task (its prompt's <Instruct>); a cross-encoder answers 400.
    instruction: str | None = None


class Score(msgspec.Struct):
    index: int
    object: Literal["score"]
    score: float | list[float]  # a list of label scores from a multi-label head


class ScoreUsage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int


class ScoreResponse(msgspec.Struct):
    id: str
    object: Literal["list"]
    created: int
    model: str
    data: list[Score]
    usage: ScoreUsage


# -- operations --


class Health(msgspec.Struct):
    status: Literal["ok"]


class Readiness(msgspec.Struct):
    status: Literal["ready"]
    models: list[str]


@dataclass(frozen=True)
class Param:
    """A path, query or header parameter."""

    name: str
    location: Literal["path", "query", "header"]
    schema: dict[str, Any]
    description: str
    required: bool = False


API_VERSION = Param(
    "api-version",
    "query",
    # The pattern the server checks (`schemas.check_api_version`), so they cannot drift apart.
    {"type": "string", "pattern": API_VERSION.pattern},
    "Azure's API version: `v1`, `preview`, or a date with an optional `-preview`",
)
EXTRA_PARAMETERS_HEADER = Param(
    "extra-parameters",
    "header",
    {"type": "string", "enum": list(EXTRA_PARAMETERS)},
    "Azure AI inference: what unknown body fields do (`error`, the default, refuses them)",
)
DEPLOYMENT = Param(
    "deployment",
    "path",
    {"type": "string"},
    "The deployment: a served model's id or alias (the body's `model` is not consulted)",
    required=True,
)
MODEL_ID = Param(
    "model_id",
    "path",
    {"type": "string"},
    "A served model's id or alias (it may contain `/`, as Hugging Face ids do)",
    required=True,
)
# Every POST route reads its body through `plumbing.read_body`, which reads this header first (a
# batch request is the first refused under load), so `build_document` lists it on every POST;
# the GET routes queue no work and read no priority.
PRIORITY = Param(
    PRIORITY_HEADER_NAME,
    "header",
    {
        "type": "string",
        "enum": [p.value for p in Priority],
        "default": Priority.INTERACTIVE.value,
    },
    "`batch` work fills idle capacity and is refused first under load; a body `priority` field, "
    "where the wire format has one, wins over the header; a batch key's requests are `batch` "
    "whatever either says",
)
MODEL_QUERY = Param(
    "model", "query", {"type": "string"}, "The model to describe; the first served when absent"
)
MODEL_QUERY_AZURE = Param(
    "model",
    "query",
    {"type": "string"},
    "With `api-version`: the model to describe; the first served when absent",
)


@dataclass(frozen=True)
class Operation:
    """One method on one path. `request` and `response` are a type, or a tuple of types when the
    route takes (and answers) several wire shapes; `error` is the type of its error bodies."""

    method: str
    path: str
    summary: str
    tag: str
    response: Any
    error: Any = None
    request: Any = None
    errors: tuple[int, ...] = ()
    params: tuple[Param, ...] = ()
    guarded: bool = True  # needs a key when the server has keys (`auth.require_api_key`)
    media_type: str = JSON


# What each kind of route can answer besides 200 (401 only when the server has keys):
# a named model's work: its body (400, 413), the model (404, 503) and its queue (429);
EMBEDDINGS_ERRORS = (400, 401, 404, 413, 429, 503)
# the same on the first model served, named by no request;
DEFAULT_MODEL_ERRORS = (400, 401, 413, 429, 503)
# the tokenizer of the first model served (no queue);
TOKENIZER_ERRORS = (400, 401, 413, 503)


def _openai_embeddings(
    path: str, summary: str, tag: str, request: Any, *params: Param
) -> Operation:
    return Operation(
        "post",
        path,
        summary,
        tag,
        OpenAIEmbeddingsResponse,
        OpenAIError,
        request,
        EMBEDDINGS_ERRORS,
        (*params, EXTRA_PARAMETERS_HEADER),
    )


def _rerank(path: str, summary: str, tag: str, error: Any) -> Operation:
    """Every rerank route takes both body shapes and answers each in its own."""
    return Operation(
        "post",
        path,
        summary,
        tag,
        (CohereRerankResponse, list[TeiRank]),
        error,
        (CohereRerankRequest, TeiRerankRequest),
        EMBEDDINGS_ERRORS,
    )


def _score(path: str) -> Operation:
    return Operation(
        "post",
        path,
        "vLLM-style scores of text pairs (one text_1 against many text_2, or pairwise)",
        "Score",
        ScoreResponse,
        OpenAIError,
        ScoreRequest,
        EMBEDDINGS_ERRORS,
    )


def _models(path: str) -> Operation:
    return Operation("get", path, "Models served", "OpenAI", ModelList, OpenAIError, errors=(401,))


OPERATIONS: tuple[Operation, ...] = (
    # OpenAI and Azure (adapters/openai.py)
    _openai_embeddings("/v1/embeddings", "OpenAI embeddings", "OpenAI", OpenAIEmbeddingsRequest),
    _openai_embeddings(
        "/embeddings",
        "OpenAI embeddings; Azure AI inference with api-version (only then is `model` optional)",
        "OpenAI",
        AzureEmbeddingsRequest,
        API_VERSION,
    ),
    _openai_embeddings(
        "/models/embeddings",
        "Azure AI inference embeddings",
        "Azure",
        AzureEmbeddingsRequest,
        API_VERSION,
    ),
    _openai_embeddings(
        "/openai/deployments/{deployment}/embeddings",
        "Azure OpenAI embeddings (AzureOpenAI client)",
        "Azure",
        AzureEmbeddingsRequest,
        DEPLOYMENT,
        API_VERSION,
    ),
    _models("/v1/models"),
    _models("/models"),
    Operation(
        "get",
        "/v1/models/{model_id}",
        "One served model",
        "OpenAI",
        ModelCard,
        OpenAIError,
        errors=(401, 404),
        params=(MODEL_ID,),
    ),
    Operation(
        "get",
        "/models/info",
        "Azure AI inference's model description",
        "Azure",
        AzureModelInfo,
        OpenAIError,
        errors=(400, 401, 404),
        params=(API_VERSION, MODEL_QUERY),
    ),
    # TEI (adapters/tei.py)
    *(
        Operation(
            "post",
            path,
            summary,
            "TEI",
            list[list[float]],
            TeiError,
            tei.EmbedRequest,
            DEFAULT_MODEL_ERRORS,
        )
        for path, summary in (
            ("/embed", "TEI embeddings: a bare array of float arrays"),
            ("/", "TEI's root route (InferenceClient.feature_extraction): as /embed"),
        )
    ),
    Operation(
        "post",
        "/similarity",
        "TEI: cosine similarity of source_sentence with each of sentences",
        "TEI",
        list[float],
        TeiError,
        tei.SimilarityRequest,
        DEFAULT_MODEL_ERRORS,
    ),
    Operation(
        "post",
        "/embed_all",
        "TEI: every token's vector of each input (an embedder's hidden states, a ColBERT's or "
        "BGE-M3's ColBERT head's token vectors; encoding_format base64: one little-endian "
        "float32 matrix per input)",
        "TEI",
        (list[list[list[float]]], list[str]),
        TeiError,
        token_vectors.EmbedAllRequest,
        EMBEDDINGS_ERRORS,
    ),
    Operation(
        "post",
        "/tokenize",
        "TEI: the model's tokens of each input",
        "TEI",
        list[list[tei.SimpleToken]],
        TeiError,
        tei.TokenizeRequest,
        TOKENIZER_ERRORS,
    ),
    Operation(
        "post",
        "/decode",
        "TEI: texts of model-vocabulary id arrays",
        "TEI",
        list[str],
        TeiError,
        tei.DecodeRequest,
        TOKENIZER_ERRORS,
    ),
    Operation(
        "post",
        "/embed_sparse",
        "TEI: sparse vectors (SPLADE, BGE-M3's sparse head), the non-zero index/value pairs of "
        "each input",
        "TEI",
        list[list[sparse.SparseValue]],
        TeiError,
        sparse.EmbedSparseRequest,
        DEFAULT_MODEL_ERRORS,
    ),
    Operation(
        "get",
        "/info",
        "TEI's model description; Azure AI inference's with ?api-version=",
        "TEI",
        (tei.Info, AzureModelInfo),
        TeiError,
        errors=(400, 401, 404, 503),
        params=(API_VERSION, MODEL_QUERY_AZURE),
    ),
    # Ollama (adapters/ollama.py)
    Operation(
        "post",
        "/api/embed",
        "Ollama embeddings",
        "Ollama",
        ollama.EmbedResponse,
        OllamaError,
        ollama.EmbedRequest,
        EMBEDDINGS_ERRORS,
    ),
    Operation(
        "post",
        "/api/embeddings",
        "Ollama's legacy single embedding",
        "Ollama",
        ollama.LegacyEmbedResponse,
        OllamaError,
        ollama.LegacyEmbedRequest,
        EMBEDDINGS_ERRORS,
    ),
    Operation(
        "get",
        "/api/tags",
        "Ollama: models served",
        "Ollama",
        ollama.TagsResponse,
        OllamaError,
        errors=(401,),
    ),
    Operation(
        "get",
        "/api/version",
        "Ollama: server version",
        "Ollama",
        ollama.VersionResponse,
        guarded=False,
    ),
    # Cohere (adapters/cohere.py)
    Operation(
        "post",
        "/v2/embed",
        "Cohere v2 embeddings",
        "Cohere",
        cohere.EmbedResponse,
        CohereError,
        cohere.EmbedRequest,
        EMBEDDINGS_ERRORS,
    ),
    # Rerank and score (adapters/rerank.py): each route's errors in its own API's shape.
    _rerank("/v1/rerank", "Cohere v1 (cohere.Client) and Jina rerank", "Cohere", CohereError),
    _rerank("/v2/rerank", "Cohere v2 rerank (cohere.ClientV2)", "Cohere", CohereError),
    _rerank("/rerank", "TEI rerank (also takes Cohere's body)", "TEI", TeiError),
    _score("/v1/score"),
    _score("/score"),
    # Sequence classification (adapters/classify.py).
    Operation(
        "post",
        "/predict",
        "TEI: each input's (text or pair) labels, best first; a list of lists with `parameters`",
        "TEI",
        (list[classify.Prediction], list[list[classify.Prediction]]),
        TeiError,
        classify.PredictRequest,
        EMBEDDINGS_ERRORS,
    ),
    *(
        Operation(
            "post",
            path,
            "vLLM: each text's label probabilities and most likely label",
            "Classify",
            classify.ClassifyResponse,
            OpenAIError,
            classify.ClassifyRequest,
            EMBEDDINGS_ERRORS,
        )
        for path in ("/classify", "/v1/classify")
    ),
    # Operations (routes.py and this module): no key, probes and scrapers carry none.
    Operation(
        "get", "/health", "Liveness: the process answers", "Operations", Health, guarded=False
    ),
    Operation(
        "get",
        "/ready",
        "Readiness: every model loaded and the server not draining",
        "Operations",
        Readiness,
        OpenAIError,
        errors=(503,),
        guarded=False,
    ),
    Operation(
        "get",
        "/metrics",
        "Prometheus metrics",
        "Operations",
        str,
        guarded=False,
        media_type="text/plain",
    ),
    Operation(
        "get",
        "/openapi.json",
        "This document (OpenAPI 3.1)",
        "Operations",
        dict[str, Any],
        guarded=False,
    ),
    Operation(
        "get",
        "/docs",
        "This document as an HTML page",
        "Operations",
        str,
        guarded=False,
        media_type="text/html",
    ),
)

_STATUS = {
    400: "The request is invalid; the body says which field or input and why",
    422: "The request is invalid (TEI's `Validation`); the body says which field or input and why",
    424: "The model served does not do this task (TEI's `Backend`)",
    401: "A key is required and was missing or wrong",
    404: "Unknown model or deployment",
    413: "The body is larger than the server's limit",
    429: "The model's queue is full; retry after Retry-After seconds",
    503: "The model is not loaded yet, or the server is shutting down",
}


def _statuses(op: Operation) -> tuple[int, ...]:
    """`op.errors`, where a TEI route's 400 stands for each status TEI gives a bad request."""
    if api_for_path(op.path) != TEI or 400 not in op.errors:
        return op.errors
    return tuple(sorted({*op.errors, *TEI_CLIENT_STATUSES}))


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "required": True,
        "schema": {"type": "string"},
    }
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "`Bearer`",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}
SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer KEY` (OpenAI, Azure AI inference, Cohere, TEI)",
    },
    "api-key": {
        "type": "apiKey",
        "in": "header",
        "name": "api-key",
        "description": "`api-key: KEY` (Azure OpenAI)",
    },
}
_DESCRIPTION = (
    "Keys, when the server has any, go in `Authorization: Bearer KEY` or `api-key: KEY`; a "
    "request passes when any key it presents is valid. Served by `embedserve serve`, the HTTP "
    "layer can also answer any route, before the app sees it, with 408 (headers or body too "
    "slow), 431 (headers too large) or 503 (too many request bodies at once), in OpenAI's "
    "error shape."
)


def _alternatives(kind: Any) -> tuple[Any, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _one_of(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    return schemas[0] if len(schemas) == 1 else {"oneOf": schemas}


def _operation_id(method: str, path: str) -> str:
    return f"{method}_{re.sub(r'[^A-Za-z0-9]+', '_', path).strip('_') or 'root'}"


def build_document(*, api_keys: bool = True) -> dict[str, Any]:
    """The OpenAPI 3.1 document of OPERATIONS, schemas from msgspec.

    `api_keys`: whether the server has keys. With keys, every guarded route needs one (the
    `bearer` or the `api-key` scheme) and may answer 401; without, the key is optional.
    """
    types: list[Any] = []
    for op in OPERATIONS:
        types += _alternatives(op.response)
        types += _alternatives(op.request) if op.request is not None else ()
        types += (op.error,) if op.error is not None else ()
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF + "{name}")
    # msgspec names Structs whose names clash by their module path; `TeiError` is `TeiError`.
    renamed = {name: _short_name(name) for name in components}
    schemas = _renamed(schemas, renamed)
    components = {renamed[name]: _renamed(schema, renamed) for name, schema in components.items()}
    by_type = iter(schemas)

    def take(kind: Any) -> dict[str, Any]:
        return _one_of([next(by_type) for _ in _alternatives(kind)])

    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        response_schema = take(op.response)
        request_schema = take(op.request) if op.request is not None else None
        error_schema = next(by_type) if op.error is not None else None
        responses: dict[str, Any] = {
            "200": {"description": "OK", "content": {op.media_type: {"schema": response_schema}}}
        }
        for status in _statuses(op):
            if status == 401 and not api_keys:
                continue
            responses[str(status)] = {
                "description": _STATUS[status],
                "content": {JSON: {"schema": error_schema}},
                **({"headers": _HEADERS[status]} if status in _HEADERS else {}),
            }
        operation: dict[str, Any] = {
            "summary": op.summary,
            "tags": [op.tag],
            "operationId": _operation_id(op.method, op.path),
            "security": _security(op.guarded, api_keys),
            "responses": responses,
        }
        params = (*op.params, PRIORITY) if op.method == "post" else op.params
        if params:
            operation["parameters"] = [
                {
                    "name": p.name,
                    "in": p.location,
                    "required": p.required,
                    "description": p.description,
                    "schema": p.schema,
                }
                for p in params
            ]
        if request_schema is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {JSON: {"schema": request_schema}},
            }
        paths.setdefault(op.path, {})[op.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "embedserve", "version": __version__, "description": _DESCRIPTION},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
    }


def _short_name(name: str) -> str:
    *module, struct = name.split(".")
    return module[-1].capitalize() + struct if module else struct


def _renamed(value: Any, names: dict[str, str]) -> Any:
    """`value` with every `$ref` to a component pointing at its new name."""
    if isinstance(value, dict):
        return {
            key: _REF + names[item[len(_REF) :]]
            if key == "$ref" and isinstance(item, str)
            else _renamed(item, names)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(_renamed(item, names) for item in value)
    return value


def _security(guarded: bool, api_keys: bool) -> list[dict[str, list[str]]]:
    """Either scheme on a guarded route; the empty alternative (no key) only when the server has
    no keys, and nothing on the routes that never ask."""
    if not guarded:
        return []
    either = [{name: []} for name in SECURITY_SCHEMES]
    return either if api_keys else [*either, {}]


def _document(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return build_document(api_keys=request.app.state["api_keys"].enabled)


@get("/openapi.json", include_in_schema=False)
async def openapi_json(request: Request[Any, Any, Any]) -> Response[bytes]:
    document = request.app.state.get("openapi_document")
    if document is None:
        document = msgspec.json.encode(_document(request))
        request.app.state["openapi_document"] = document
    return Response(document, media_type=JSON)


@get("/docs", include_in_schema=False)
async def docs(request: Request[Any, Any, Any]) -> Response[str]:
    """A plain HTML reference built from the same document (no scripts, works offline)."""
    document = _document(request)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>embedserve API</title>",
        (
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
            "code{background:#f4f4f4}td,th{padding:0 1em 0 0;text-align:left}</style></head><body>"
        ),
        f"<h1>embedserve {html.escape(__version__)}</h1>",
        "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a> (OpenAPI 3.1).</p>",
        f"<p>{html.escape(document['info']['description'])}</p>",
    ]
    components = document["components"]["schemas"]
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            key = " Needs a key." if {} not in op["security"] and op["security"] else ""
            parts.append(
                f"<h2><code>{method.upper()} {html.escape(path)}</code></h2>"
                f"<p>{html.escape(op['summary'])}.{key}</p>"
            )
            for param in op.get("parameters", []):
                parts.append(
                    f"<p><code>{html.escape(param['name'])}</code> ({param['in']}): "
                    f"{html.escape(param['description'])}</p>"
                )
            body = op.get("requestBody", {}).get("content", {}).get(JSON, {}).get("schema", {})
            for shape in body.get("oneOf", [body]):
                name = shape.get("$ref", "").rsplit("/", 1)[-1]
                parts += _fields_table(name, components.get(name, {}))
            statuses = ", ".join(op["responses"])
            parts.append(f"<p>Responses: {statuses}</p>")
    parts.append("</body></html>")
    return Response("".join(parts), media_type="text/html")


def _fields_table(name: str, schema: dict[str, Any]) -> list[str]:
    if not schema.get("properties"):
        return []
    required = set(schema.get("required", []))
    rows = [
        f"<p>Body <code>{html.escape(name.rsplit('.', 1)[-1])}</code>:</p>",
        "<table><tr><th>field</th><th>type</th><th></th></tr>",
    ]
    for field, prop in schema["properties"].items():
        kind = html.escape(msgspec.json.encode(prop).decode()[:120])
        flag = "required" if field in required else ""
        rows.append(f"<tr><td><code>{field}</code></td><td>{kind}</td><td>{flag}</td></tr>")
    rows.append("</table>")
    return rows


ROUTES = [openapi_json, docs]
