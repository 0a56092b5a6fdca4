"""Errors: one exception type for the API, and handlers that turn anything raised into an error
body with the right status, in the shape of the API whose route was called (server/shapes.py);
OpenAI's `{"error": {"message", "type", "param", "code"}}` where a route has no API of its own."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_401_UNAUTHORIZED,
    HTTP_404_NOT_FOUND,
    HTTP_405_METHOD_NOT_ALLOWED,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_429_TOO_MANY_REQUESTS,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)

from embedserve.batching import BatcherClosedError, QueueFullError
from embedserve.errors import InputError
from embedserve.server.access import CLIENT_CLOSED_REQUEST, log_client_closed
from embedserve.server.shapes import OPENAI, api_for_path, api_status, error_body

log = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"
RATE_LIMIT = "rate_limit_error"


class ApiError(Exception):
    """An error for the client, with everything its JSON body and status need."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}


def invalid(message: str, *, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(HTTP_400_BAD_REQUEST, message, param=param, code=code)


def model_not_found(model: str) -> ApiError:
    return ApiError(
        HTTP_404_NOT_FOUND,
        f"The model `{model}` does not exist.",
        param="model",
        code="model_not_found",
    )


def deployment_not_found(deployment: str) -> ApiError:
    # Azure OpenAI's own code, so clients that look for it keep working.
    return ApiError(
        HTTP_404_NOT_FOUND,
        f"The deployment `{deployment}` does not exist.",
        code="DeploymentNotFound",
    )


def not_ready(model: str, reason: str | None = None) -> ApiError:
    detail = f": {reason}" if reason else "; try again shortly"
    return ApiError(
        HTTP_503_SERVICE_UNAVAILABLE,
        f"The model `{model}` is not loaded yet{detail}",
        type=SERVER_ERROR,
        code="model_not_ready",
        headers={"Retry-After": "5"},
    )


# Each kind of model: what it is called in messages, and the route that serves it.
_KINDS = {
    "reranker": ("a reranker", "/v1/rerank"),
    "sparse": ("a sparse encoder", "/embed_sparse"),
    "late-interaction": (
        "a late-interaction (ColBERT) model",
        "/embed_all, /v1/rerank or /v1/score",
    ),
}
_EMBEDDER = ("an embedding model", "/v1/embeddings")


def wrong_kind(model: str, kind: str, wanted: str) -> ApiError:
    """A model asked for what another kind does: a reranker for embeddings, an embedder to
    rerank or for sparse vectors, ..."""
    noun, route = _KINDS.get(kind, _EMBEDDER)
    wanted_noun = _KINDS.get(wanted, _EMBEDDER)[0]
    return ApiError(
        HTTP_400_BAD_REQUEST,
        f"The model `{model}` is {noun}, not {wanted_noun}; use it with {route}, or name "
        f"{wanted_noun.split(' ', 1)[0]} {wanted} model",
        param="model",
        code="wrong_model_kind",
    )


class ClientDisconnected(Exception):
    """The client closed the connection before its embeddings were ready."""


def error_response(error: ApiError, api: str = OPENAI) -> Response[bytes]:
    """The error body in `api`'s shape, with `api`'s status for it; like OpenAI's, the body
    does not repeat the status."""
    body = {"message": error.message, "type": error.type, "param": error.param, "code": error.code}
    return Response(
        content=msgspec.json.encode(error_body(api, error.status, body)),
        status_code=api_status(api, error.status, error.code),
        media_type="application/json",
        headers=error.headers,
    )


def _respond(request: Request[Any, Any, Any], error: ApiError) -> Response[bytes]:
    return error_response(error, api_for_path(request.url.path))


def _from_api_error(request: Request[Any, Any, Any], exc: ApiError) -> Response[bytes]:
    return _respond(request, exc)


def _from_input_error(request: Request[Any, Any, Any], exc: InputError) -> Response[bytes]:
    # The message names the input's index; `param` stays the field name, as OpenAI's does.
    return _respond(
        request, ApiError(HTTP_400_BAD_REQUEST, str(exc), param=exc.param, code=exc.code)
    )


def _from_queue_full(request: Request[Any, Any, Any], exc: QueueFullError) -> Response[bytes]:
    return _respond(
        request,
        ApiError(
            HTTP_429_TOO_MANY_REQUESTS,
            str(exc),
            type=RATE_LIMIT,
            code="queue_full",
            headers={"Retry-After": str(exc.retry_after)},
        ),
    )


def _from_closed(request: Request[Any, Any, Any], exc: BatcherClosedError) -> Response[bytes]:
    return _respond(
        request,
        ApiError(
            HTTP_503_SERVICE_UNAVAILABLE,
            str(exc),
            type=SERVER_ERROR,
            code="shutting_down",
            headers={"Retry-After": "5"},
        ),
    )


def _from_disconnect(request: Request[Any, Any, Any], exc: ClientDisconnected) -> Response[bytes]:
    # uvicorn drops this response (the client is gone) and logs nothing, so log it here.
    log_client_closed(request.scope)
    return _respond(
        request,
        ApiError(
            CLIENT_CLOSED_REQUEST, "client closed the connection", code="client_closed_request"
        ),
    )


_HTTP_CODES = {
    HTTP_400_BAD_REQUEST: "invalid_request",
    HTTP_401_UNAUTHORIZED: "invalid_api_key",
    HTTP_404_NOT_FOUND: "unknown_url",
    HTTP_405_METHOD_NOT_ALLOWED: "method_not_allowed",
    HTTP_413_REQUEST_ENTITY_TOO_LARGE: "request_too_large",
}


def _from_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Litestar's own errors: routing (404, 405), body size (413), validation (400)."""
    status = exc.status_code
    if status >= HTTP_500_INTERNAL_SERVER_ERROR:
        return _from_bug(request, exc)
    if status == HTTP_404_NOT_FOUND:
        message = f"Invalid URL ({request.method} {request.url.path})"
    elif status == HTTP_405_METHOD_NOT_ALLOWED:
        message = f"Method {request.method} is not allowed on {request.url.path}"
    elif status == HTTP_413_REQUEST_ENTITY_TOO_LARGE:
        limit = request.app.state.get("max_body_bytes")
        message = f"The request body is larger than the server's limit of {limit} bytes"
    else:
        message = exc.detail
        if isinstance(exc, ValidationException) and exc.extra:
            message = f"{message}: {exc.extra}"
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
    return _respond(
        request,
        ApiError(
            status,
            message,
            type=INVALID_REQUEST,
            code=_HTTP_CODES.get(status, "invalid_request"),
            headers=headers,
        ),
    )


def _from_bug(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return _respond(
        request,
        ApiError(
            HTTP_500_INTERNAL_SERVER_ERROR,
            "The server had an internal error.",
            type=SERVER_ERROR,
            code="internal_error",
        ),
    )


EXCEPTION_HANDLERS: dict[type[Exception], Any] = {
    ApiError: _from_api_error,
    InputError: _from_input_error,
    QueueFullError: _from_queue_full,
    BatcherClosedError: _from_closed,
    ClientDisconnected: _from_disconnect,
    HTTPException: _from_http_exception,
    Exception: _from_bug,
}
