"""The access log: no query-string value ever written, and a line for clients that hung up.

uvicorn writes the full path with its query string, so a key sent as `?api-key=...` (refused:
keys go in headers), a token, a session id or a signed URL's signature would land in the log
verbatim. Guessing which parameters are secret by their names misses some (`?sk=`, `?jwt=`), so
`RedactSecrets` replaces every value with `REDACTED` on uvicorn's access logger and keeps a
parameter's name only when it plainly is one. uvicorn writes no line at all for a request whose
client left before the response (it drops the response), so `log_client_closed` writes one,
with the status 499 that nginx uses for it, redacted the same way.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from typing import Any

ACCESS_LOGGER = "uvicorn.access"
CLIENT_CLOSED_REQUEST = 499
HIDDEN = "REDACTED"
# A name worth keeping: short, unencoded, no separator. Anything else (`api-key%3DKEY`, a bare
# `KEY` with no `=`) may be a value itself.
_PLAIN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,31}")


def redact(path: str) -> str:
    """`path?query` with every query value replaced by REDACTED, and every name that is not
    plainly a name too; the path before the `?` as it was."""
    base, sep, query = path.partition("?")
    if not sep:
        return path
    return base + sep + "&".join(_redact_pair(pair) for pair in query.split("&"))


def _redact_pair(pair: str) -> str:
    if not pair:
        return pair
    name, sep, _ = pair.partition("=")
    shown = name if _PLAIN_NAME.fullmatch(name) else HIDDEN
    return f"{shown}={HIDDEN}" if sep else HIDDEN


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
        path = redact(f"{path}?{query.decode('ascii', 'replace')}")
    logger.info(
        '%s - "%s %s HTTP/%s" %d',
        f"{client[0]}:{client[1]}" if client else "-",
        scope.get("method", "-"),
        path,
        scope.get("http_version", "1.1"),
        CLIENT_CLOSED_REQUEST,
    )
