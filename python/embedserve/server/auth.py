"""API keys: `Authorization: Bearer KEY` (OpenAI, Azure AI inference) or `api-key: KEY` (Azure).

Azure clients send both headers at once; a request passes when any key it presents is valid.

A batch key (`--batch-api-key`) is a valid key whose every request is batch work: the key caps the
request's priority, whatever its `X-Priority` header or `priority` field asks, so a corpus job
given its own key cannot compete with interactive traffic. `require_api_key` notes the cap on the
request and `plumbing.priority_of`, the one place a request's priority is decided, applies it. A
request presenting a batch key and a plain key at once is batch work too.
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar import Request
from litestar.status_codes import HTTP_401_UNAUTHORIZED

from embedserve.admission import Priority
from embedserve.server.errors import ApiError

# Where `require_api_key` notes a batch key's cap: the request's own ASGI state (a fresh dict per
# request), read by `key_priority`.
_KEY_PRIORITY = "embedserve.key_priority"


class ApiKeys:
    def __init__(self, keys: tuple[str, ...], batch_keys: tuple[str, ...] = ()) -> None:
        self._keys = [k.encode("utf-8") for k in keys]
        self._batch_keys = [k.encode("utf-8") for k in batch_keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys or self._batch_keys)

    def check(self, headers: Any) -> Priority | None:
        """Raise a 401 unless the headers carry a valid key (or no keys are configured); return
        the priority the key caps its requests to: batch for a batch key, else None."""
        if not self._keys and not self._batch_keys:
            return None
        presented = _presented_keys(headers)
        if not presented:
            raise ApiError(
                HTTP_401_UNAUTHORIZED,
                "You didn't provide an API key. Send it as 'Authorization: Bearer KEY' "
                "or as an 'api-key: KEY' header.",
                code="missing_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        # Every presented key against every key of both kinds, no early exit: timing says
        # nothing about which key nearly matched (`|`, not `or`, never skips a comparison).
        plain = batch = False
        for key in presented:
            candidate = key.encode("utf-8", "surrogateescape")
            plain |= _matches(candidate, self._keys)
            batch |= _matches(candidate, self._batch_keys)
        if not (plain or batch):
            raise ApiError(
                HTTP_401_UNAUTHORIZED,
                "Incorrect API key provided.",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return Priority.BATCH if batch else None


def _matches(candidate: bytes, keys: list[bytes]) -> bool:
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key)
    return matched


def _presented_keys(headers: Any) -> list[str]:
    keys: list[str] = []
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            keys.append(token.strip())
    api_key = headers.get("api-key")
    if api_key:
        keys.append(api_key.strip())
    return keys


async def require_api_key(request: Request[Any, Any, Any]) -> None:
    """The check of the routes that need a key, as their `before_request` hook. Not a guard:
    Litestar copies the route handler for every guard call (~10 µs a request, seen in a profile
    of one-text requests); and async although it never awaits, as Litestar runs a sync hook on
    a worker thread, a thread hop for every request."""
    keys: ApiKeys = request.app.state["api_keys"]
    capped = keys.check(request.headers)
    if capped is not None:
        request.scope["state"][_KEY_PRIORITY] = capped


def key_priority(request: Request[Any, Any, Any]) -> Priority | None:
    """The priority the request's key caps it to (batch for a batch key), else None."""
    return request.scope["state"].get(_KEY_PRIORITY)
