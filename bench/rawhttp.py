"""A lean HTTP/1.1 keep-alive client for load generation, and a /health prober in its own process.

Why not httpx: it costs about a millisecond of CPU a request in Python. With 320 closed-loop
clients on the same two cores as the server, the load generator's own event loop fell seconds
behind. Its clients then reported latencies the server never had: a 429 decided in 1 ms showed
as 4 s, and /health as 2.3 s, while curl from another process saw 1 ms (bench/NOTES.md, "Overload
measured with a lean client"). This client prebuilds each request's bytes, and parses only the
status line, the headers it needs, and a Content-Length or chunked body.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import multiprocessing
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes


def request_bytes(
    url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """The bytes of one keep-alive request; a `body` is sent as JSON."""
    lines = [f"{method} {path} HTTP/1.1", f"host: {urlsplit(url).netloc}"]
    if body is not None:
        lines += ["content-type: application/json", f"content-length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def post_json(url: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """The bytes of one keep-alive POST of a JSON body."""
    return request_bytes(url, "POST", path, body, headers)


class Connection:
    """One keep-alive connection, reopened when the server closes it. Not for concurrent use."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> Answer:
        """Send `raw` and read the answer. A connection the server closed while idle is reopened
        and the request sent once more (nothing of it was processed)."""
        reused = self._writer is not None
        try:
            return await self._exchange(raw)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            self.close()
            if reused and _nothing_read(exc):
                return await self._exchange(raw)
            raise

    def close(self) -> None:
        """Hang up (also what a client that gave up does: the server sees the disconnect)."""
        if self._writer is not None:
            self._writer.transport.abort()
        self._reader = self._writer = None

    async def _exchange(self, raw: bytes) -> Answer:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._reader, self._writer
        assert reader is not None
        writer.write(raw)
        status, headers = _parse_head(await reader.readuntil(b"\r\n\r\n"))
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await _read_chunked(reader)
        else:
            body = b""
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Answer(status, headers, body)


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """The status and the (lower-cased) headers of a response head, its blank line included."""
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


class BlockingConnection:
    """One keep-alive connection on a blocking socket, for one request at a time from one thread.

    At one request at a time the event loop is pure cost: `Connection`'s wake-up (the loop's poll,
    the protocol, the stream reader, the task) measured 0.03–0.2 ms more a request than a thread
    blocked in `recv` (bench/NOTES.md, wave 23), and that time lands in the latency the bench
    reports as the server's. Answers with a Content-Length only (what the server sends)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._socket: socket.socket | None = None
        self._pending = b""

    def request(self, raw: bytes) -> Answer:
        if self._socket is None:
            self._socket = socket.create_connection(self.address, timeout=60)
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._pending = b""
        self._socket.sendall(raw)
        buffer = self._pending
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            buffer += self._receive()
        status, headers = _parse_head(buffer[: end + 4])
        size = int(headers["content-length"])
        body = buffer[end + 4 :]
        while len(body) < size:
            body += self._receive()
        self._pending = body[size:]
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Answer(status, headers, body[:size])

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
        self._socket = None

    def _receive(self) -> bytes:
        assert self._socket is not None
        chunk = self._socket.recv(1 << 16)
        if not chunk:
            self.close()
            raise ConnectionError("the server closed the connection mid-answer")
        return chunk


def _nothing_read(exc: BaseException) -> bool:
    return not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def run(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine on uvloop when it is installed (the server's own loop), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())


def _probe(url: str, path: str, seconds: float, every: float, out: Any) -> None:
    parts = urlsplit(url)
    latencies: list[float] = []
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        sent = time.monotonic()
        try:
            connection.request("GET", path)
            connection.getresponse().read()
            latencies.append(time.monotonic() - sent)
        except (OSError, http.client.HTTPException):
            latencies.append(10.0)
            connection.close()
        time.sleep(every)
    connection.close()
    out.send(latencies)
    out.close()


@contextlib.contextmanager
def prober(url: str, seconds: float, path: str = "/health", every: float = 0.1):
    """GET `path` every `every` s for `seconds` from a separate process, so its latencies are
    the server's (not the load generator's event loop lag). Yields a list filled on exit."""
    receive, send = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context("spawn").Process(
        target=_probe, args=(url, path, seconds, every, send), daemon=True
    )
    process.start()
    latencies: list[float] = []
    try:
        yield latencies
    finally:
        if receive.poll(seconds + 30):
            latencies.extend(receive.recv())
        process.join(5)
        if process.is_alive():
            process.kill()


class RawResponse:
    """The parts of an httpx.Response that the benches read."""

    def __init__(self, answer: Answer) -> None:
        self.status_code = answer.status
        self.headers = answer.headers
        self.content = answer.body

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class RawClient:
    """One `Connection` behind httpx.AsyncClient's `post`/`get`, so a bench can swap clients.
    Transport failures are raised as httpx.TransportError, as the httpx client would."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.headers = dict(headers or {})
        self._connection = Connection(url)

    async def post(self, path: str, content: bytes) -> RawResponse:
        return await self._send(post_json(self.url, path, content, self.headers))

    async def get(self, path: str) -> RawResponse:
        return await self._send(request_bytes(self.url, "GET", path, headers=self.headers))

    async def _send(self, raw: bytes) -> RawResponse:
        import httpx

        try:
            return RawResponse(await self._connection.request(raw))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self._connection.close()
            raise httpx.TransportError(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self._connection.close()
