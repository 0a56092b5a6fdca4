"""HTTP/1.1 limits below the app: header and body read timeouts, header size and count caps, and
a cap on request-body bytes held at once. uvicorn has none of these (it has a connection cap,
`limit_concurrency`, which `embedserve serve` sets), and an ASGI layer cannot see a request
before its headers are complete, so they live in a subclass of uvicorn's httptools protocol
(bench/NOTES.md says why not another server).

Every refusal is a JSON error in the shape of the API whose route was asked (server/shapes.py;
OpenAI's before the request line is in), written straight to the socket with
`connection: close`:

- 408 `request_timeout`: headers not complete `header_timeout_seconds` after the connection
  opened (or after the request's first byte, on a kept-alive connection), or the body not
  complete `body_timeout_seconds` after the headers;
- 431 `headers_too_large`: request line and headers over `max_header_bytes`, or more than
  `max_headers` headers;
- 503 `server_busy` (with `Retry-After`): the body bytes that just arrived would take the bodies
  held by this process past `max_body_bytes_in_flight`, or take bodies still arriving past half
  of it (`BodyBudget`).

A body counts as its bytes arrive, never by the size its headers declare: headers that promise
16 MiB and send nothing hold nothing, so they cannot lock others out. Its bytes count until its
response is complete, and are given back at once when it is refused, times out or its client
hangs up. A declared size over `max_body_bytes` is refused from the headers alone (413, by the
app, before any body byte is read).

What a client streaming real bytes slowly can still hold: its bytes, until the body timeout
(counted from the headers, not extended by progress), so holding N bytes for a minute costs
sending N bytes a minute. And bodies still arriving may hold at most half the budget together,
so a body that arrives whole in one read (a typical request) still finds room when slow
uploads fill their half; only other large, slow bodies get 503 then.

The body of each refusal is built by `refusal_body`, the one place that shapes them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import urllib.parse
from typing import Any

import httptools
import msgspec
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from embedserve.server.coalesce import CoalescingTransport
from embedserve.server.config import HttpLimits
from embedserve.server.shapes import OPENAI, api_for_path, error_body

log = logging.getLogger(__name__)


class BodyBudget:
    """Request-body bytes held at once by one process (all connections): one event loop, so
    no lock.

    `held` counts every body byte that has arrived and whose response is not complete;
    `arriving` the part of it whose bodies are not complete yet, which may not pass half the
    limit, so slow uploads cannot take the room that whole bodies need. One body alone always
    fits (an empty budget takes any size; the app's `max_body_bytes` bounds it).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.arriving = 0

    def take(self, size: int, *, complete: bool) -> bool:
        """Room for `size` more bytes of a body; `complete`: they end it."""
        if self.held and self.held + size > self.limit:
            return False
        if not complete and self.arriving and self.arriving + size > self.limit // 2:
            return False
        self.held += size
        if not complete:
            self.arriving += size
        return True

    def settle(self, size: int) -> None:
        """`size` bytes taken as arriving belong to a body that is complete now."""
        self.arriving -= size

    def give(self, size: int, arriving: int) -> None:
        """Give back `size` bytes, `arriving` of them from a body that never completed."""
        self.held -= size
        self.arriving -= arriving


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above.

    uvicorn takes it by import path (`Config(http=PROTOCOL)`), which survives the trip to worker
    processes; each process reads the limits from the server config in its environment, or
    from `configure` (an app served in-process).
    """

    limits: HttpLimits | None = None
    budget: BodyBudget | None = None

    @classmethod
    def configure(cls, limits: HttpLimits) -> None:
        cls.limits = limits
        cls.budget = BodyBudget(limits.max_body_bytes_in_flight)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if LimitedHttpToolsProtocol.limits is None:
            LimitedHttpToolsProtocol.configure(_limits_from_env())
        self.limits: HttpLimits = LimitedHttpToolsProtocol.limits  # type: ignore[assignment]
        self.budget: BodyBudget = LimitedHttpToolsProtocol.budget  # type: ignore[assignment]
        self._in_headers = True
        self._header_bytes = 0  # bytes of the open head received before the read being parsed
        self._unclaimed = 0  # bytes of the read being parsed not claimed by a part before the head
        self._header_count = 0
        self._parsed_header_bytes = 0
        self._refusal: tuple[int, str, str] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._path: str | None = None  # the request's URL path, once its request line is read
        self._declared: int | None = None  # the request's Content-Length; None when chunked
        self._received = 0  # body bytes of the request so far
        self._held = 0  # body bytes this connection's requests hold in the budget
        self._arriving = 0  # the part of them whose body is not complete yet

    # -- connection --

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # One write per response (server/coalesce.py): the limits below see the same transport.
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self._arm(self.limits.header_timeout_seconds, self._headers_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._release()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # refused: the connection is closing, ignore whatever else arrives
        # A head's bytes are counted after parsing, as one read may end a request and begin the
        # next: those of the read that no earlier part claims (a head that ended in it, a body)
        # belong to the head still open, from its first byte, on a kept-alive connection too (an
        # upper bound: a chunked body's framing is not claimed).
        self._unclaimed = len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refusal is None:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
            return
        if not self._in_headers:
            return
        self._header_bytes += self._unclaimed
        if self._header_bytes > self.limits.max_header_bytes:
            self._refuse(
                431,
                "headers_too_large",
                f"The request line and headers exceed {self.limits.max_header_bytes} bytes",
            )

    # -- parser callbacks --

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_headers:  # the next request on a kept-alive connection
            self._in_headers = True
            self._header_bytes = 0
            self._arm(self.limits.header_timeout_seconds, self._headers_timed_out)
        self._header_count = 0
        self._parsed_header_bytes = 0
        self._path = None

    def on_url(self, url: bytes) -> None:
        self._parsed_header_bytes += len(url)
        super().on_url(url)
        # Called again if the URL arrives in pieces: a refusal before the rest names a prefix.
        self._path = _url_path(self.url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._parsed_header_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._header_count > self.limits.max_headers:
            self._refuse(
                431,
                "headers_too_large",
                f"The request has more than {self.limits.max_headers} headers",
            )
            raise _Refused  # stops the parser: no app task starts for this request
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        # Parsed bytes, not received ones: the read that ends the head may also hold a body or
        # the next request. The request line counts as "METHOD SP url SP HTTP/1.1 CRLF", plus
        # the CRLF that ends the head; its bytes in this read are claimed, not the next head's.
        head = self._parsed_header_bytes + len(self.parser.get_method()) + 14
        self._unclaimed = max(0, self._unclaimed - max(0, head - self._header_bytes))
        if head > self.limits.max_header_bytes:
            self._refuse(
                431,
                "headers_too_large",
                f"The request line and headers exceed {self.limits.max_header_bytes} bytes",
            )
            raise _Refused
        self._in_headers = False
        # Nothing is taken from the budget for the declared size: bytes count as they arrive.
        self._declared = _content_length(self.headers)
        self._received = 0
        self._arm(self.limits.body_timeout_seconds, self._body_timed_out)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._unclaimed = max(0, self._unclaimed - len(body))
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:  # else uvicorn drops the bytes
            self._received += len(body)
            # A chunked body's end is known only at on_message_complete: arriving until then.
            complete = self._declared is not None and self._received >= self._declared
            if not self._take(len(body), complete=complete):
                self._abandon_cycle()
                raise _Refused
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        self._settle()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._release()
        super().on_response_complete()

    # -- helpers --

    def _take(self, size: int, *, complete: bool) -> bool:
        if self.budget.take(size, complete=complete):
            self._held += size
            if complete:
                self._settle()
            else:
                self._arriving += size
            return True
        self._refuse(
            503,
            "server_busy",
            "The server is receiving too many request bodies at once; retry shortly",
            retry_after=True,
        )
        return False

    def _settle(self) -> None:
        if self._arriving:
            self.budget.settle(self._arriving)
            self._arriving = 0

    def _release(self) -> None:
        if self._held:
            self.budget.give(self._held, self._arriving)
            self._held = self._arriving = 0

    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _headers_timed_out(self) -> None:
        if self._in_headers and not self.transport.is_closing():
            self._refuse(
                408,
                "request_timeout",
                f"The request headers did not arrive within "
                f"{self.limits.header_timeout_seconds:g}s",
            )

    def _body_timed_out(self) -> None:
        cycle = self.cycle
        if cycle is None or self.transport.is_closing():
            return
        if cycle.response_started:
            self.transport.close()  # answered already (a 413 or 429 before the body was read)
            return
        self._abandon_cycle()
        self._refuse(
            408,
            "request_timeout",
            f"The request body did not arrive within {self.limits.body_timeout_seconds:g}s",
        )

    def _abandon_cycle(self) -> None:
        """Tell the app its client is gone, so whatever it sends next is dropped."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()

    def _refuse(self, status: int, code: str, message: str, *, retry_after: bool = False) -> None:
        if self._refusal is not None or self.transport.is_closing():
            return
        self._refusal = (status, code, message)
        self._disarm()
        self._release()
        log.warning("%s: %d %s", _peer(self.client), status, message)
        body = refusal_body(status, code, message, self._path)
        head = [
            STATUS_LINE[status],
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n",
        ]
        if retry_after:
            head.append(b"retry-after: 1\r\n")
        self.transport.write(b"".join([*head, b"\r\n", body]))
        self.transport.close()


def refusal_body(status: int, code: str, message: str, path: str | None) -> bytes:
    """The JSON body of a refusal written below the app (408, 431, 503): the one place that
    shapes them. `path`: the request's URL path as sent (no query), None when the request line
    had not arrived (it may be a prefix of the path if the refusal came before the rest)."""
    error_type = "server_error" if status >= 500 else "invalid_request_error"
    error = {"message": message, "type": error_type, "param": None, "code": code}
    api = OPENAI if path is None else api_for_path(path)
    return msgspec.json.encode(error_body(api, status, error))


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a request that was just refused."""


def _content_length(headers: list[tuple[bytes, bytes]] | None) -> int | None:
    for name, value in headers or ():
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # httptools refuses a malformed length itself
    return None


def _url_path(url: bytes) -> str | None:
    """The path of a request target, percent-decoded as uvicorn puts it in the ASGI scope."""
    try:
        raw = httptools.parse_url(url).path
    except httptools.HttpParserInvalidURLError:
        return None
    if raw is None:
        return None
    return urllib.parse.unquote(raw.decode("latin-1"))


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "client"


PROTOCOL = "embedserve.server.http:LimitedHttpToolsProtocol"


def _limits_from_env() -> HttpLimits:
    from embedserve.server.app import CONFIG_ENV
    from embedserve.server.config import ServerConfig

    text = os.environ.get(CONFIG_ENV)
    return ServerConfig.from_json(text).http if text else HttpLimits()
