"""One embeddings request from parsed body to response bytes: admit and tokenize (worker thread),
queue for the model's batcher, then cut/normalize and encode. Knows nothing of HTTP."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from embedserve.engine import Engine, Prepared
from embedserve.server.config import ServerConfig
from embedserve.server.encoding import embeddings_body
from embedserve.server.limits import admit
from embedserve.server.metrics import Metrics
from embedserve.server.registry import ServedModel
from embedserve.server.schemas import EmbeddingsRequest
from embedserve.server.token_arrays import TokenArrays

# Below this many floats, finishing and encoding on the event loop costs less than a thread hop.
_INLINE_FLOATS = 64 * 1024


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
    def __init__(self, config: ServerConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        # Loaded now, so a server that cannot read token arrays fails at start, not at a request.
        self.token_arrays = TokenArrays.for_encoding(config.token_encoding)
        # Tokenizing and encoding are CPU work: a few threads, sized to the cores, off the loop.
        self._executor = ThreadPoolExecutor(
            max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="embedserve-cpu"
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def embed(self, request: EmbeddingsRequest, model: ServedModel) -> Embedded:
        """Vectors for `request` as an OpenAI response body. Cancelling the awaiting task drops
        the request's inputs that are still queued."""
        return await self._run(request, model, openai_body=True)

    async def embed_vectors(self, request: EmbeddingsRequest, model: ServedModel) -> Vectors:
        """The finished vectors for `request`, for adapters that render their own wire format."""
        return await self._run(request, model, openai_body=False)

    def _admit(self, request: EmbeddingsRequest, engine: Engine) -> Prepared:
        return admit(
            self.token_arrays.resolve(request),
            engine,
            self.config.limits,
            auto_truncate=self.config.auto_truncate,
            allow_dimensions=self.config.allow_dimensions,
        )

    async def _run(self, request: EmbeddingsRequest, model: ServedModel, *, openai_body: bool) -> Any:
        engine, batcher = model.require()
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        prepared = await loop.run_in_executor(self._executor, partial(self._admit, request, engine))
        tokenization = time.perf_counter() - started

        ticket = batcher.submit(prepared.sequences)
        try:
            pooled = await ticket.result()
        finally:
            ticket.cancel()  # a no-op once computed; drops queued inputs if we were cancelled

        tokens = int(prepared.token_counts.sum())
        finish = partial(
            _finish_and_encode if openai_body else _finish, engine, pooled, request, model.id, tokens
        )
        result = (
            finish()
            if pooled.size <= _INLINE_FLOATS
            else await loop.run_in_executor(self._executor, finish)
        )

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
