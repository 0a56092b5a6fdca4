"""Which API a path belongs to, and that API's error body: the one table that the app's exception
handlers (server/errors.py) and the HTTP layer's own refusals (server/http.py: 408, 431, 503)
both read, so every error a route answers, 413/429/503 included, has the route's own shape.

- OpenAI (and Azure, vLLM's score): `{"error": {"message", "type", "param", "code"}}`
- TEI: `{"error": message, "error_type": "Validation" | "Empty" | "Overloaded" | "Unhealthy" |
  "Backend"}`, with TEI's statuses for them (`tei_answer`)
- Ollama: `{"error": message}`
- Cohere: `{"message": message}`
"""

from __future__ import annotations

from typing import Any

import msgspec

OPENAI = "openai"
TEI = "tei"
OLLAMA = "ollama"
COHERE = "cohere"

# TEI's own routes (its `/rerank` too: TEI's rerank body is `texts`, Cohere's clients call
# `/v1/rerank` and `/v2/rerank`).
_TEI_PATHS = frozenset(
    {
        "/",
        "/embed",
        "/embed_all",
        "/tokenize",
        "/decode",
        "/info",
        "/rerank",
        "/predict",
        "/similarity",
    }
)
_COHERE_PATHS = frozenset({"/v2/embed", "/v1/rerank", "/v2/rerank"})


def api_for_path(path: str) -> str:
    if path in _TEI_PATHS or path.startswith(("/embed_", "/tei/")):
        return TEI
    if path in _COHERE_PATHS:
        return COHERE
    if path.startswith("/api/"):
        return OLLAMA
    return OPENAI


# What TEI answers for the refusals we answer 400 (OpenAI's status for any bad request): its
# ErrorType's status (huggingface/text-embeddings-inference at
# 0d124dc9773be6ac5a9a57d8439aba9bbbf33273, router/src/http/server.rs `From<&ErrorType> for
# StatusCode`: Empty 400, Validation and Tokenizer 422, Backend 424) and axum 0.7's for a body
# its `Json` extractor refuses (JsonSyntaxError 400: no JSON; JsonDataError 422: JSON of the
# wrong shape or types, which is every other body we refuse). By our error `code`:
_TEI_CLIENT_ERRORS = {
    # `inputs` empty, or an empty text or id array in it (core/src/tokenization.rs).
    "empty_input": (400, "Empty"),
    # axum answers it in text; the error type is ours (TEI has none for it).
    "invalid_json": (400, "Validation"),
    # TEI's `embed_sparse` on a model that is not SPLADE, `rerank` on one that is no
    # classifier, ...: a BackendError::Inference (core/src/infer.rs). TEI serves one model, so
    # ours with none of the kind a TEI route needs ("no reranker is served") is the same case.
    "wrong_model_kind": (424, "Backend"),
    "model_not_found": (424, "Backend"),
}
_TEI_VALIDATION = (422, "Validation")
#: Every status a TEI route may answer for a refusal we call 400, for /openapi.json.
TEI_CLIENT_STATUSES = tuple(
    sorted({status for status, _ in (*_TEI_CLIENT_ERRORS.values(), _TEI_VALIDATION)})
)


def tei_answer(status: int, code: str | None) -> tuple[int, str]:
    """TEI's status and `error_type` for an error we answer with `status` and `code`."""
    if status == 400:
        return _TEI_CLIENT_ERRORS.get(code or "", _TEI_VALIDATION)
    if status == 429:
        return status, "Overloaded"
    if status == 503:
        return status, "Unhealthy"
    if status >= 500:
        return status, "Backend"
    return status, "Validation"


def api_status(api: str, status: int, code: str | None) -> int:
    """The status `api`'s own server answers for an error we answer with `status` and `code`
    (OpenAI's, which the other APIs share except TEI: `tei_answer`)."""
    return tei_answer(status, code)[0] if api == TEI else status


class OpenAIErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(msgspec.Struct):
    error: OpenAIErrorBody


class TeiError(msgspec.Struct):
    error: str
    error_type: str


class OllamaError(msgspec.Struct):
    error: str


class CohereError(msgspec.Struct):
    message: str


#: Each API's error body: what `error_body` builds, and what /openapi.json documents.
ERROR_BODIES: dict[str, type[msgspec.Struct]] = {
    OPENAI: OpenAIError,
    TEI: TeiError,
    OLLAMA: OllamaError,
    COHERE: CohereError,
}


def error_body(api: str, status: int, error: dict[str, Any]) -> msgspec.Struct:
    """`error` is OpenAI's error object (message, type, param, code); the body `api` sends
    for it with `status` (ours: `api_status` gives the one sent)."""
    if api == TEI:
        return TeiError(error["message"], tei_answer(status, error["code"])[1])
    if api == OLLAMA:
        return OllamaError(error["message"])
    if api == COHERE:
        return CohereError(error["message"])
    return OpenAIError(OpenAIErrorBody(**error))
