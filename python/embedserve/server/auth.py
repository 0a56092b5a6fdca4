"""API keys: `Authorization: Bearer KEY` (OpenAI, Azure AI inference) or `api-key: KEY` (Azure).

Azure clients send both headers at once; a request passes when any key it presents is valid.
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar import Request
from litestar.status_codes import HTTP_401_UNAUTHORIZED

from embedserve.server.errors import ApiError


class ApiKeys:
    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = [k.encode("utf-8") for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def valid(self, presented: str) -> bool:
        candidate = presented.encode("utf-8", "surrogateescape")
        # Compare with every key, no early exit: timing says nothing about which key nearly matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        return matched

    def check(self, headers: Any) -> None:
        """Raise a 401 unless the headers carry a valid key (or no keys are configured)."""
        if not self._keys:
            return
        presented = _presented_keys(headers)
        if not presented:
            raise ApiError(
                HTTP_401_UNAUTHORIZED,
                "You didn't provide an API key. Send it as 'Authorization: Bearer KEY' "
                "or as an 'api-key: KEY' header.",
                code="missing_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not any([self.valid(key) for key in presented]):  # noqa: C419 - a list checks every one
            raise ApiError(
                HTTP_401_UNAUTHORIZED,
                "Incorrect API key provided.",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )


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
    keys.check(request.headers)
