"""Which API a path belongs to, and that API's error body: the one table that the app's exception
handlers (server/errors.py) and the HTTP layer's own refusals (server/http.py: 408, 431, 503)
both read, so every error a route answers, 413/429/503 included, has the route's own shape.

- OpenAI (and Azure, vLLM's score): `{"error": {"message", "type", "param", "code"}}`
- TEI: `{"error": message, "error_type": "Validation" | "Overloaded" | "Unhealthy" | "Backend"}`
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


def tei_error_type(status: int) -> str:
    if status == 429:
        return "Overloaded"
    if status == 503:
        return "Unhealthy"
    if status >= 500:
        return "Backend"
    return "Validation"


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
    """`error` is OpenAI's error object (message, type, param, code); the body `api` sends."""
    if api == TEI:
        return TeiError(error["message"], tei_error_type(status))
    if api == OLLAMA:
        return OllamaError(error["message"])
    if api == COHERE:
        return CohereError(error["message"])
    return OpenAIError(OpenAIErrorBody(**error))
