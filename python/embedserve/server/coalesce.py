"""One socket write per response: a transport that holds a response's status line and headers
until its body follows.

uvicorn writes the head (`http.response.start`) and the body (`http.response.body`) with two
`transport.write` calls, so a small response costs two send syscalls and goes out as two TCP
segments; the client wakes for the head and again for the body. For one short text that was
the largest single item on the event loop's thread (a cProfile of `bench http --concurrency 1
--texts-per-request 1`, bench/NOTES.md "One-text fast path"). An app answering in one go sends
both in the same loop iteration, so the head waits at most until the end of that iteration
(a `call_soon`): a response with no body (HEAD, 204) or a streamed one loses nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

_STATUS_LINE = b"HTTP/1.1 "
_END_OF_HEAD = b"\r\n\r\n"


class CoalescingTransport:
    """Wraps the connection's transport; everything but `write`, `close` and `abort` passes
    through."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        elif data.startswith(_STATUS_LINE) and data.endswith(_END_OF_HEAD):
            self._head = data
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self) -> None:
        """Write a held head now (its body did not follow in the same iteration)."""
        if self._head is not None:
            head, self._head = self._head, None
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._head = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
