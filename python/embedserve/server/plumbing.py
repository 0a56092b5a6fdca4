"""What every HTTP handler shares, whichever API it serves: the server's state, the request's
priority, reading the body, running a job (cancelled when the client hangs up), and the timing
headers.

Handlers take the raw `Request` so Litestar never parses a body: each API's parser decodes it, so
every malformed body gets that API's error shape and message.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from litestar import Request
from litestar.exceptions import InternalServerException
from litestar.types import Receive, Scope, Send

from embedserve.admission import Priority
from embedserve.batching import Batcher
from embedserve.server.auth import key_priority
from embedserve.server.config import ServerConfig
from embedserve.server.errors import ClientDisconnected
from embedserve.server.fields import parse_priority
from embedserve.server.lifecycle import Drain
from embedserve.server.metrics import Metrics
from embedserve.server.pipeline import Done, Job, RequestPipeline, Until
from embedserve.server.registry import ModelRegistry
from embedserve.server.token_arrays import TokenArrays

T = TypeVar("T")
R = TypeVar("R")
JSON = "application/json"
JSON_BYTES = JSON.encode("latin-1")
# Bodies up to this size are parsed on the event loop (under ~2 ms); larger ones on a worker.
INLINE_BODY_BYTES = 256 * 1024
# Selects a request's priority on every route; a body field, where a wire format has one, wins.
PRIORITY_HEADER_NAME = "X-Priority"  # as documented (/openapi.json); headers match in any case
PRIORITY_HEADER = PRIORITY_HEADER_NAME.lower()


@dataclass(frozen=True)
class ServerState:
    """What handlers need, kept in `app.state["server"]`."""

    config: ServerConfig
    registry: ModelRegistry
    pipeline: RequestPipeline
    metrics: Metrics
    drain: Drain
    token_arrays: TokenArrays


class Timed(Protocol):
    """A finished request's phases, in seconds (embeddings, vectors, rerank scores), and what
    it computed: the tokens the model saw and the characters of its texts."""

    @property
    def tokens(self) -> int: ...

    @property
    def characters(self) -> int: ...

    @property
    def tokenization_seconds(self) -> float: ...

    @property
    def queue_seconds(self) -> float: ...

    @property
    def inference_seconds(self) -> float: ...


def state(request: Request[Any, Any, Any]) -> ServerState:
    return request.app.state["server"]


def priority_of(request: Request[Any, Any, Any], field: Priority | None = None) -> Priority:
    """Batch for a request whose key is a batch key (`auth.key_priority`), whatever it asks;
    else the body's `priority` field (already parsed) if it has one, else the `X-Priority`
    header, else interactive. A malformed header is a 400 whatever the key."""
    if field is None:
        field = parse_priority(request.headers.get(PRIORITY_HEADER), PRIORITY_HEADER)
    return key_priority(request) or field or Priority.INTERACTIVE


async def read_body(request: Request[Any, Any, Any], *, runs_model: bool = True) -> bytes:
    """The body of a request that the pipeline would admit now: before a byte of it is read,
    503 while draining and, for a route that queues model work (`runs_model`), 429 when every
    model's queue is over what it admits for the priority of the request's key and header
    (`refuse_early`): /tokenize and /decode never wait for a model, so a full queue is no
    reason to refuse them."""
    pipeline = state(request).pipeline
    if runs_model:
        pipeline.refuse_early(state(request).registry.models, priority_of(request))
    else:
        pipeline.refuse_if_draining()
    try:
        return await request.body()
    except InternalServerException as exc:  # Litestar's way to say the client left mid-body
        raise ClientDisconnected() from exc


async def read_parsed(
    request: Request[Any, Any, Any], parse: Callable[[bytes], T], *, runs_model: bool = True
) -> T:
    """`parse` of the request's body (`read_body`), on a worker thread when the body is large:
    decoding 16 MB of token-array JSON takes ~0.1 s, which on the event loop would stall every
    other request and health probe for that long (batch work's on the threads below the loop)."""
    body = await read_body(request, runs_model=runs_model)
    if len(body) <= INLINE_BODY_BYTES:
        return parse(body)
    return await state(request).pipeline.off_loop(parse, body, priority=priority_of(request))


async def run_job(
    request: Request[Any, Any, Any],
    job: Job[R],
    model: str,
    batcher: Batcher | None = None,
    priority: Priority | None = None,
) -> Done[R]:
    """Run `job` on the pipeline at the request's priority (`priority`: its body field),
    dropping it from the queue if the client hangs up."""
    pipeline = state(request).pipeline
    until = UntilDisconnected(request)
    try:
        return await pipeline.run(job, model, batcher, priority_of(request, priority), until)
    finally:
        until.close()


class UntilDisconnected(Until):
    """Awaits each wait of a job, cancelling it (which drops its queued inputs) and raising
    `ClientDisconnected` if the client hangs up.

    Neither uvicorn nor Litestar cancels a handler when its client goes away, so listen for
    `http.disconnect` on the ASGI channel ourselves; the body is already read, so nothing else
    arrives on it. The listener starts at the job's first wait: a job answered on the event loop
    never waits, and a client cannot be heard leaving while the loop is busy with it anyway.
    """

    def __init__(self, request: Request[Any, Any, Any]) -> None:
        self._request = request
        self._watcher: asyncio.Future[None] | None = None

    async def __call__(self, work: Awaitable[T]) -> T:
        if self._watcher is None:
            self._watcher = asyncio.ensure_future(_disconnect(self._request))
        task = asyncio.ensure_future(work)
        try:
            await asyncio.wait({task, self._watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled():
            raise ClientDisconnected()
        try:
            return task.result()
        finally:
            # An exception raised here holds this frame in its traceback, and this frame holds the
            # task (and `work`, when it is a future), which holds the exception: a cycle that kept
            # each refused request's body and texts (32 MB for a 16 MB body) until the next full
            # garbage collection.
            del task, work

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None


async def _disconnect(request: Request[Any, Any, Any]) -> None:
    """Return when the client disconnects; never, if the server sends anything else (a server
    that answered `receive` at once with empty messages would otherwise make this spin)."""
    if (await request.receive())["type"] != "http.disconnect":
        await asyncio.get_running_loop().create_future()


class JsonAnswer:
    """A 200 JSON answer as a bare ASGI app: a handler that returns one skips Litestar's
    Response, whose header objects cost ~15 µs of a one-text request's ~250 µs on the event
    loop (bench/NOTES.md, "The one-text fast path, measured"). Same bytes on the wire."""

    __slots__ = ("body", "headers")

    def __init__(self, body: bytes, headers: dict[str, str]) -> None:
        self.body = body
        self.headers = [
            *((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()),
            (b"content-type", JSON_BYTES),
            (b"content-length", str(len(body)).encode("latin-1")),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


def timing_headers(done: Timed, started: float) -> dict[str, str]:
    """Per-request phases in milliseconds and what was computed, under TEI's header names
    (router/src/lib.rs, `From<ResponseMetadata> for HeaderMap`). TEI writes whole milliseconds;
    ours keep microseconds (a model run is often under one), which any number parser reads.
    TEI's x-compute-time is its x-total-time again; x-compute-tokens the tokens the model saw
    (truncated, special tokens included); x-compute-characters the texts' characters (TEI
    counts an id as one; token ids count none here). TEI's x-compute-type is not sent: it is
    the constant "gpu+optimized" there, a label for Hugging Face's billing, not a measurement."""
    total = f"{(time.perf_counter() - started) * 1e3:.3f}"
    return {
        "x-compute-time": total,
        "x-compute-characters": str(done.characters),
        "x-compute-tokens": str(done.tokens),
        "x-tokenization-time": f"{done.tokenization_seconds * 1e3:.3f}",
        "x-queue-time": f"{done.queue_seconds * 1e3:.3f}",
        "x-inference-time": f"{done.inference_seconds * 1e3:.3f}",
        "x-total-time": total,
    }
