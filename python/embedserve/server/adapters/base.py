"""What every adapter shares: body decoding into Structs, running the internal request, float rows
as JSON, and error bodies in the adapter's own shape (reading the body, the server's state and the
timing headers are every handler's: `server.plumbing`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
import numpy as np
from litestar import Request, Response

from embedserve import _core
from embedserve.server.errors import EXCEPTION_HANDLERS, invalid
from embedserve.server.plumbing import state, unless_disconnected
from embedserve.server.registry import ServedModel
from embedserve.server.schemas import EmbeddingsRequest
from embedserve.server.service import Vectors

T = TypeVar("T")
JSON = "application/json"
# (status, OpenAI error object, headers) → the adapter's response.
ErrorRenderer = Callable[[int, dict[str, Any], dict[str, str]], Response[Any]]


def decode(body: bytes, kind: type[T]) -> T:
    """`body` as the Struct `kind`; any mismatch is a 400 that names the field (`$.inputs`)."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise invalid(f"invalid request body: {exc}", code="invalid_value") from exc
    except (msgspec.DecodeError, RecursionError) as exc:
        raise invalid(
            f"We could not parse the JSON body of your request ({exc}). "
            "The body must be a JSON object, in UTF-8.",
            code="invalid_json",
        ) from exc


async def compute(
    request: Request[Any, Any, Any], internal: EmbeddingsRequest, model: ServedModel
) -> Vectors:
    """Run the internal request through the service (admission, limits, batching, metrics),
    dropping it from the queue if the client hangs up."""
    return await unless_disconnected(request, state(request).service.embed_vectors(internal, model))


def float_rows(vectors: np.ndarray) -> bytes:
    """`[[...],[...]]`: rows written by the C++ JSON encoder, joined here."""
    rows = _core.encode_json(np.ascontiguousarray(vectors, dtype=np.float32))
    return ("[" + ",".join(rows) + "]").encode("ascii")


def json_response(
    content: bytes | Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> Response[bytes]:
    body = content if isinstance(content, bytes) else msgspec.json.encode(content)
    return Response(content=body, status_code=status, media_type=JSON, headers=headers or {})


def error_handlers(render: ErrorRenderer) -> dict[type[Exception], Any]:
    """Route-level handlers for every exception the app handles, re-rendered by `render`.

    The app's handlers decide status, message and headers (one place for that); this only
    changes the body's shape. Route-level handlers win over app-level ones for the same class.
    """

    def reshape(handler: Any) -> Any:
        def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
            openai = handler(request, exc)
            error = msgspec.json.decode(openai.content)["error"]
            headers = {k: v for k, v in dict(openai.headers).items() if k.lower() != "content-type"}
            return render(openai.status_code, error, headers)

        return handle

    return {kind: reshape(handler) for kind, handler in EXCEPTION_HANDLERS.items()}
