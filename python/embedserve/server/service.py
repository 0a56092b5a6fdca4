"""One embeddings request from parsed body to response bytes: admit and tokenize (worker thread),
queue for the model's batcher, then cut/normalize and encode. Knows nothing of HTTP."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np

from embedserve.engine import Engine
from embedserve.server.config import ServerConfig
from embedserve.server.encoding import embeddings_body
from embedserve.server.limits import admit
from embedserve.server.metrics import Metrics
from embedserve.server.registry import ServedModel
from embedserve.server.schemas import EmbeddingsRequest

# Below this many floats, finishing and encoding on the event loop costs less than a thread hop.
_INLINE_FLOATS = 64 * 1024


@dataclass(frozen=True)
class Embedded:
    body: bytes
    tokenization_seconds: float
    queue_seconds: float
    inference_seconds: float


class EmbeddingService:
    def __init__(self, config: ServerConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        # Tokenizing and encoding are CPU work: a few threads, sized to the cores, off the loop.
        self._executor = ThreadPoolExecutor(
            max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="embedserve-cpu"
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def embed(self, request: EmbeddingsRequest, model: ServedModel) -> Embedded:
        """Vectors for `request` as a response body. Cancelling the awaiting task drops the
        request's inputs that are still queued."""
        engine, batcher = model.require()
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        prepared = await loop.run_in_executor(
            self._executor,
            partial(
                admit,
                request,
                engine,
                self.config.limits,
                auto_truncate=self.config.auto_truncate,
                allow_dimensions=self.config.allow_dimensions,
            ),
        )
        tokenization = time.perf_counter() - started

        ticket = batcher.submit(prepared.sequences)
        try:
            pooled = await ticket.result()
        finally:
            ticket.cancel()  # a no-op once computed; drops queued inputs if we were cancelled

        tokens = int(prepared.token_counts.sum())
        finish = partial(_finish_and_encode, engine, pooled, request, model.id, tokens)
        body = (
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
        return Embedded(body, tokenization, ticket.queue_seconds, ticket.inference_seconds)


def _finish_and_encode(
    engine: Engine, pooled: np.ndarray, request: EmbeddingsRequest, model: str, tokens: int
) -> bytes:
    vectors = engine.finish(pooled, dimensions=request.dimensions, normalize=request.normalize)
    return embeddings_body(
        vectors, encoding_format=request.encoding_format, model=model, prompt_tokens=tokens
    )
