"""`GET /openapi.json` and `GET /docs`: the API description, built from the request and response
types the routes use (the adapters' msgspec Structs; for the OpenAI routes, whose body is parsed
by hand in `schemas.py`, Structs that a test holds equal to that parser's field list).

schemathesis runs against this document in the tests (tests/server/test_openapi.py): every
response must be one the document describes, and none may be a server error.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get

from embedserve import __version__
from embedserve.server.adapters import cohere, ollama, tei

Positive = Annotated[int, msgspec.Meta(ge=1)]
Input = str | list[str | int | list[int]]
EncodingFormat = Literal["float", "base64", "int8", "uint8", "binary", "ubinary"]


class OpenAIEmbeddingsRequest(msgspec.Struct, kw_only=True):
    """OpenAI's embeddings request, with embedserve's extensions (truncate, truncation_direction,
    normalize, prompt_name, the byte encodings) and Azure AI inference's input_type."""

    input: Input
    model: str | None = None
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


class OpenAIErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(msgspec.Struct):
    error: OpenAIErrorBody


class ModelCard(msgspec.Struct):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(msgspec.Struct):
    object: Literal["list"]
    data: list[ModelCard]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    tag: str
    response: Any
    error: Any
    request: Any = None
    # 2xx besides the documented body: none. Errors every embeddings route can give.
    errors: tuple[int, ...] = (400, 401, 404, 413, 429, 503)


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "post",
        "/v1/embeddings",
        "OpenAI embeddings",
        "OpenAI",
        OpenAIEmbeddingsResponse,
        OpenAIError,
        OpenAIEmbeddingsRequest,
    ),
    Operation(
        "post",
        "/embeddings",
        "OpenAI embeddings; Azure AI inference with api-version",
        "OpenAI",
        OpenAIEmbeddingsResponse,
        OpenAIError,
        OpenAIEmbeddingsRequest,
    ),
    Operation(
        "post",
        "/models/embeddings",
        "Azure AI inference embeddings",
        "Azure",
        OpenAIEmbeddingsResponse,
        OpenAIError,
        OpenAIEmbeddingsRequest,
    ),
    Operation(
        "get", "/v1/models", "Models served", "OpenAI", ModelList, OpenAIError, errors=(401,)
    ),
    Operation(
        "post",
        "/embed",
        "TEI embeddings: a bare array of float arrays",
        "TEI",
        list[list[float]],
        tei.Error,
        tei.EmbedRequest,
    ),
    Operation(
        "post",
        "/",
        "TEI's root route (InferenceClient.feature_extraction): as /embed",
        "TEI",
        list[list[float]],
        tei.Error,
        tei.EmbedRequest,
    ),
    Operation(
        "post",
        "/tokenize",
        "TEI: the model's tokens of each input",
        "TEI",
        list[list[tei.SimpleToken]],
        tei.Error,
        tei.TokenizeRequest,
    ),
    Operation(
        "post",
        "/decode",
        "TEI: texts of model-vocabulary id arrays",
        "TEI",
        list[str],
        tei.Error,
        tei.DecodeRequest,
    ),
    Operation(
        "get",
        "/info",
        "TEI's model description (Azure's with ?api-version=)",
        "TEI",
        tei.Info,
        tei.Error,
        errors=(401, 503),
    ),
    Operation(
        "post",
        "/api/embed",
        "Ollama embeddings",
        "Ollama",
        ollama.EmbedResponse,
        ollama.Error,
        ollama.EmbedRequest,
    ),
    Operation(
        "post",
        "/api/embeddings",
        "Ollama's legacy single embedding",
        "Ollama",
        ollama.LegacyEmbedResponse,
        ollama.Error,
        ollama.LegacyEmbedRequest,
    ),
    Operation(
        "get",
        "/api/tags",
        "Ollama: models served",
        "Ollama",
        ollama.TagsResponse,
        ollama.Error,
        errors=(401,),
    ),
    Operation(
        "get",
        "/api/version",
        "Ollama: server version",
        "Ollama",
        ollama.VersionResponse,
        ollama.Error,
        errors=(),
    ),
    Operation(
        "post",
        "/v2/embed",
        "Cohere v2 embeddings",
        "Cohere",
        cohere.EmbedResponse,
        cohere.Error,
        cohere.EmbedRequest,
    ),
)


def build_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of OPERATIONS, schemas from msgspec."""
    types: list[Any] = []
    for op in OPERATIONS:
        types += [op.response, op.error] + ([op.request] if op.request is not None else [])
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    by_type = iter(schemas)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        response_schema, error_schema = next(by_type), next(by_type)
        request_schema = next(by_type) if op.request is not None else None
        responses: dict[str, Any] = {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": response_schema}},
            }
        }
        for status in op.errors:
            responses[str(status)] = {
                "description": _STATUS[status],
                "content": {"application/json": {"schema": error_schema}},
            }
        operation: dict[str, Any] = {
            "summary": op.summary,
            "tags": [op.tag],
            "operationId": f"{op.method}_{op.path.strip('/').replace('/', '_') or 'root'}",
            "responses": responses,
        }
        if request_schema is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": request_schema}},
            }
        paths.setdefault(op.path, {})[op.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "embedserve", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
    }


_STATUS = {
    400: "The request is invalid; the body says which field or input and why",
    401: "A key is required and was missing or wrong",
    404: "Unknown model",
    413: "The body is larger than the server's limit",
    429: "The model's queue is full; retry after Retry-After seconds",
    503: "The model is not loaded yet, or the server is shutting down",
}


@get("/openapi.json", include_in_schema=False)
async def openapi_json(request: Request[Any, Any, Any]) -> Response[bytes]:
    document = request.app.state.get("openapi_document")
    if document is None:
        document = msgspec.json.encode(build_document())
        request.app.state["openapi_document"] = document
    return Response(document, media_type="application/json")


@get("/docs", include_in_schema=False)
async def docs() -> Response[str]:
    """A plain HTML reference built from the same document (no scripts, works offline)."""
    document = build_document()
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>embedserve API</title>",
        (
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
            "code{background:#f4f4f4}td,th{padding:0 1em 0 0;text-align:left}</style></head><body>"
        ),
        f"<h1>embedserve {html.escape(__version__)}</h1>",
        "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a> (OpenAPI 3.1).</p>",
    ]
    components = document["components"]["schemas"]
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            parts.append(
                f"<h2><code>{method.upper()} {html.escape(path)}</code></h2>"
                f"<p>{html.escape(op['summary'])}</p>"
            )
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            ref = body.get("schema", {}).get("$ref", "")
            schema = components.get(ref.rsplit("/", 1)[-1], {})
            if schema.get("properties"):
                required = set(schema.get("required", []))
                parts.append("<table><tr><th>field</th><th>type</th><th></th></tr>")
                for name, prop in schema["properties"].items():
                    kind = html.escape(msgspec.json.encode(prop).decode()[:120])
                    flag = "required" if name in required else ""
                    parts.append(
                        f"<tr><td><code>{name}</code></td><td>{kind}</td><td>{flag}</td></tr>"
                    )
                parts.append("</table>")
            statuses = ", ".join(op["responses"])
            parts.append(f"<p>Responses: {statuses}</p>")
    parts.append("</body></html>")
    return Response("".join(parts), media_type="text/html")


ROUTES = [openapi_json, docs]
