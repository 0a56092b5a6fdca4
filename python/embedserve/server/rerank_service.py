"""One rerank or score request from parsed body to response bytes: admit and tokenize the pairs
(worker thread), queue them on the model's batcher, then score, order and render. Knows no HTTP."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np

from embedserve.models.kind import RERANKER
from embedserve.pairs import PreparedPairs
from embedserve.reranker import Reranker, ranking
from embedserve.server.config import Limits, ServerConfig
from embedserve.server.errors import invalid
from embedserve.server.metrics import Metrics
from embedserve.server.registry import ServedModel
from embedserve.server.rerank_schemas import (
    RerankRequest,
    ScoreRequest,
    cohere_body,
    score_body,
    tei_body,
)


@dataclass(frozen=True)
class Scored:
    body: bytes
    tokenization_seconds: float
    queue_seconds: float
    inference_seconds: float


def admit_pairs(
    reranker: Reranker,
    limits: Limits,
    *,
    prepare: Callable[[bool], PreparedPairs],
    count: int,
    param: str,
    truncate: bool,
    query: str | None = None,
) -> PreparedPairs:
    """The one place rerank and score limits are checked; tokenizes in the middle of it.

    Counts first (free), then the tokenizer, then token limits on the untruncated pairs: each pair
    within `max_input_tokens` even when truncation is on, all pairs within `max_request_tokens`.
    """
    if query is not None and not query:
        raise invalid("query must not be empty", param="query", code="empty_input")
    if count == 0:
        raise invalid(f"{param} must not be an empty array", param=param, code="empty_input")
    if count > limits.max_documents:
        raise invalid(
            f"{param} has {count} items; at most {limits.max_documents} are allowed per request",
            param=param,
            code="too_many_inputs",
        )
    prepared = prepare(truncate)
    untruncated = prepared.untruncated_tokens
    longest = int(untruncated.argmax())
    if untruncated[longest] > limits.max_input_tokens:
        raise invalid(
            f"{param}[{longest}] with the query has {int(untruncated[longest])} tokens; at most "
            f"{limits.max_input_tokens} are allowed per pair, even when truncation is on",
            param=param,
            code="context_length_exceeded",
        )
    total = int(untruncated.sum())
    if total > limits.max_request_tokens:
        raise invalid(
            f"the pairs hold {total} tokens in all; at most {limits.max_request_tokens} are "
            "allowed per request",
            param=param,
            code="too_many_tokens",
        )
    return prepared


class RerankService:
    def __init__(self, config: ServerConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self._executor = ThreadPoolExecutor(
            max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="embedserve-rerank"
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def rerank(self, request: RerankRequest, model: ServedModel, api_version: str) -> Scored:
        reranker: Reranker = model.require(RERANKER)[0]
        truncate = self._truncate(request.truncate)
        prepare = partial(
            admit_pairs,
            reranker,
            self.config.limits,
            prepare=lambda cut: reranker.prepare(
                request.query,
                request.documents,
                truncate=cut,
                max_tokens_per_doc=request.max_tokens_per_doc,
                param=request.param,
            ),
            count=len(request.documents),
            param=request.param,  # errors name the request's own field: TEI says `texts`
            truncate=truncate,
            query=request.query,
        )
        logits, tokens, timings = await self._run(model, prepare)
        relevance = reranker.relevance(logits, raw_scores=request.raw_scores)
        order = ranking(relevance, request.top_n).tolist()
        scores = relevance.tolist()
        if request.dialect == "tei":
            body = tei_body(request, order, scores)
        else:
            body = cohere_body(request, model.id, order, scores, tokens, api_version)
        return Scored(body, *timings)

    async def score(self, request: ScoreRequest, model: ServedModel) -> Scored:
        reranker: Reranker = model.require(RERANKER)[0]
        prepare = partial(
            admit_pairs,
            reranker,
            self.config.limits,
            prepare=lambda cut: reranker.prepare_pairs(
                request.firsts, request.seconds, truncate=cut, param="text_2"
            ),
            count=len(request.seconds),
            param="text_2",
            truncate=self._truncate(request.truncate),
        )
        logits, tokens, timings = await self._run(model, prepare)
        scores = reranker.scores(logits, raw_scores=request.raw_scores).tolist()
        return Scored(score_body(model.id, scores, tokens), *timings)

    def _truncate(self, asked: bool | None) -> bool:
        return self.config.auto_truncate if asked is None else asked

    async def _run(
        self, model: ServedModel, prepare: Callable[[], PreparedPairs]
    ) -> tuple[np.ndarray, int, tuple[float, float, float]]:
        """Tokenize off the loop, batch, and count: logits, tokens seen, and the three timings."""
        _, batcher = model.require(RERANKER)
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        prepared = await loop.run_in_executor(self._executor, prepare)
        tokenization = time.perf_counter() - started
        ticket = batcher.submit(prepared.pairs)
        try:
            logits = await ticket.result()
        finally:
            ticket.cancel()  # a no-op once computed; drops queued pairs if we were cancelled
        tokens = int(prepared.token_counts.sum())
        labels = model.id
        self.metrics.tokens.labels(labels).inc(tokens)
        self.metrics.inputs.labels(labels).inc(len(prepared.pairs))
        self.metrics.tokenization.labels(labels).observe(tokenization)
        self.metrics.queue.labels(labels).observe(ticket.queue_seconds)
        self.metrics.inference.labels(labels).observe(ticket.inference_seconds)
        return logits, tokens, (tokenization, ticket.queue_seconds, ticket.inference_seconds)
