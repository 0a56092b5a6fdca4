"""The access log: secrets in query strings redacted, and a line for clients that hung up.

uvicorn writes the full path with its query string, so a key sent as `?api-key=...` (refused:
keys go in headers) would land in the log verbatim; `RedactSecrets` rewrites such values to
`REDACTED` on uvicorn's access logger. uvicorn writes no line at all for a request whose client
left before the response (it drops the response), so `log_client_closed` writes one, with the
status 499 that nginx uses for it.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from typing import Any

ACCESS_LOGGER = "uvicorn.access"
CLIENT_CLOSED_REQUEST = 499
# Query parameters whose value may be a credential, by name (case-insensitive).
_SECRET = re.compile(r"key|token|secret|passw|auth|sig|credential|code", re.IGNORECASE)
_PARAM = re.compile(r"([^&=?]+)=([^&]*)")


def redact(path: str) -> str:
    """`path?query` with the values of credential-like parameters replaced by REDACTED."""
    base, sep, query = path.partition("?")
    if not sep:
        return path

    def hide(match: re.Match[str]) -> str:
        name = urllib.parse.unquote_plus(match.group(1))
        return f"{match.group(1)}=REDACTED" if _SECRET.search(name) else match.group(0)

    return base + sep + _PARAM.sub(hide, query)


class RedactSecrets(logging.Filter):
    """For uvicorn's access records: args are (client, method, path, http_version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], redact(args[2]), args[3], args[4])
        return True


def install() -> None:
    """Add the filter to uvicorn's access logger (once)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactSecrets) for f in logger.filters):
        logger.addFilter(RedactSecrets())


def log_client_closed(scope: Any) -> None:
    """An access line, in uvicorn's format, for a request whose client hung up."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not logger.hasHandlers():
        return
    client = scope.get("client")
    path = urllib.parse.quote(scope.get("path", ""))
    query = scope.get("query_string") or b""
    if query:
        path = f"{path}?{query.decode('ascii', 'replace')}"
    logger.info(
        '%s - "%s %s HTTP/%s" %d',
        f"{client[0]}:{client[1]}" if client else "-",
        scope.get("method", "-"),
        path,
        scope.get("http_version", "1.1"),
        CLIENT_CLOSED_REQUEST,
    )
