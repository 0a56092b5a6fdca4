"""One embeddings request from parsed body to response bytes: check limits, admit or refuse (429)
on the estimated wait, tokenize in bounded steps (worker threads), queue for the model's batcher,
then cut/normalize and encode. Knows nothing of HTTP."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np

from embedserve.batching import BatcherClosedError, QueueFullError, Ticket
from embedserve.engine import Engine, Prepared
from embedserve.server.config import ServerConfig
from embedserve.server.encoding import embeddings_body
from embedserve.server.lifecycle import Drain
from embedserve.server.limits import DEFAULT_TOKENS_PER_CHAR, Admission
from embedserve.server.metrics import Metrics
from embedserve.server.registry import ServedModel
from embedserve.server.schemas import EmbeddingsRequest
from embedserve.server.token_arrays import TokenArrays

# Below this many floats, finishing and encoding on the event loop costs less than a thread hop.
_INLINE_FLOATS = 64 * 1024
# Up to about this many tokens, tokenizing on the event loop (tens of microseconds) costs less than
# the hop to a worker thread and back (~0.4 ms of a 1-text request's latency, bench/NOTES.md).
_INLINE_TOKENS = 256


@dataclass(frozen=True)
class Embedded:
    body: bytes
    tokenization_seconds: float
    queue_seconds: float
    inference_seconds: float


@dataclass(frozen=True)
class Vectors:
    """A request's finished vectors (cut, normalized as asked), for an adapter to render."""

    vectors: np.ndarray
    prompt_tokens: int
    tokenization_seconds: float
    queue_seconds: float
    inference_seconds: float


class EmbeddingService:
    """Admission, tokenization, batching and encoding for any route: an API adapter parses its
    body into an `EmbeddingsRequest` and calls `embed` (or `prepare`, to render its own body)."""

    def __init__(self, config: ServerConfig, metrics: Metrics, drain: Drain | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.drain = drain
        self.active = 0  # requests admitted and not yet answered: a drain waits for them
        # Loaded now, so a server that cannot read token arrays fails at start, not at a request.
        self.token_arrays = TokenArrays.for_encoding(config.token_encoding)
        # Tokenizing and encoding are CPU work: a few threads, sized to the cores, off the loop.
        # Each request keeps at most one bounded step in this pool's FIFO queue at a time, so
        # the steps of concurrent requests take turns: a 1-text request waits for at most one
        # step of each request ahead of it, never for a heavy request's whole tokenization.
        self._executor = ThreadPoolExecutor(
            max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="embedserve-cpu"
        )
        # Measured tokens per character, per model, for estimating a request before tokenizing.
        self._tokens_per_char: dict[str, float] = {}

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def refuse_early(self, models: list[ServedModel]) -> None:
        """Before a body is read: 503 while draining, and 429 when every model's queue already
        holds more than `--max-wait-seconds` of work (a request for any of them would be
        refused), so a refusal costs the same whatever the body's size."""
        if self.drain is not None and self.drain.draining:
            raise BatcherClosedError("the server is shutting down")
        waits = [m.batcher.estimated_wait() for m in models if m.batcher is not None]
        if waits and min(waits) > self.config.max_wait_seconds:
            raise QueueFullError.wait(min(waits), self.config.max_wait_seconds)

    async def prepare(
        self, request: EmbeddingsRequest, model: ServedModel
    ) -> tuple[Prepared, Ticket, float]:
        """Admit `request` and queue it for `model`: the cheap limits, then the queue decision
        (429 from the estimated wait, before any tokenizing), then bounded tokenization.
        Returns the prepared inputs, the queued ticket and the seconds spent tokenizing."""
        engine, batcher = model.require()
        if self.drain is not None and self.drain.draining:
            raise BatcherClosedError("the server is shutting down")
        admission = Admission(
            request,
            engine,
            self.config.limits,
            auto_truncate=self.config.auto_truncate,
            allow_dimensions=self.config.allow_dimensions,
            resolve=self.token_arrays.resolve,
        )
        ratio = self._tokens_per_char.get(model.id, DEFAULT_TOKENS_PER_CHAR)
        estimate = admission.estimated_tokens(ratio)
        reservation = batcher.reserve(len(request.inputs), estimate)
        loop = asyncio.get_running_loop()
        inline = estimate <= _INLINE_TOKENS
        started = time.perf_counter()
        try:
            for step in admission.steps():
                if inline:
                    step()
                else:
                    await loop.run_in_executor(self._executor, step)
            prepared = admission.prepared()
            ticket = batcher.submit(prepared.sequences, reservation)
        finally:
            reservation.release()  # a no-op once submitted
        if admission.characters:
            measured = int(prepared.untruncated_tokens.sum()) - 2 * len(prepared.sequences)
            measured = min(2.0, max(0.01, measured / admission.characters))
            self._tokens_per_char[model.id] = ratio + 0.2 * (measured - ratio)
        return prepared, ticket, time.perf_counter() - started

    async def embed(self, request: EmbeddingsRequest, model: ServedModel) -> Embedded:
        """Vectors for `request` as an OpenAI response body. Cancelling the awaiting task drops
        the request's inputs that are still queued."""
        return await self._run(request, model, openai_body=True)

    async def embed_vectors(self, request: EmbeddingsRequest, model: ServedModel) -> Vectors:
        """The finished vectors for `request`, for adapters that render their own wire format."""
        return await self._run(request, model, openai_body=False)

    async def _run(
        self, request: EmbeddingsRequest, model: ServedModel, *, openai_body: bool
    ) -> Embedded | Vectors:
        engine, _ = model.require()
        loop = asyncio.get_running_loop()
        self.active += 1
        try:
            prepared, ticket, tokenization = await self.prepare(request, model)
            try:
                pooled = await ticket.result()
            finally:
                ticket.cancel()  # a no-op once computed; drops queued inputs if we were cancelled

            tokens = int(prepared.token_counts.sum())
            finish = partial(
                _finish_and_encode if openai_body else _finish,
                engine,
                pooled,
                request,
                model.id,
                tokens,
            )
            result = (
                finish()
                if pooled.size <= _INLINE_FLOATS
                else await loop.run_in_executor(self._executor, finish)
            )
        finally:
            self.active -= 1

        labels = model.id
        self.metrics.tokens.labels(labels).inc(tokens)
        self.metrics.inputs.labels(labels).inc(len(prepared.sequences))
        self.metrics.tokenization.labels(labels).observe(tokenization)
        self.metrics.queue.labels(labels).observe(ticket.queue_seconds)
        self.metrics.inference.labels(labels).observe(ticket.inference_seconds)
        timings = (tokenization, ticket.queue_seconds, ticket.inference_seconds)
        if openai_body:
            return Embedded(result, *timings)
        return Vectors(result, tokens, *timings)


def _finish(
    engine: Engine, pooled: np.ndarray, request: EmbeddingsRequest, model: str, tokens: int
) -> np.ndarray:
    return engine.finish(pooled, dimensions=request.dimensions, normalize=request.normalize)


def _finish_and_encode(
    engine: Engine, pooled: np.ndarray, request: EmbeddingsRequest, model: str, tokens: int
) -> bytes:
    vectors = _finish(engine, pooled, request, model, tokens)
    return embeddings_body(
        vectors, encoding_format=request.encoding_format, model=model, prompt_tokens=tokens
    )
