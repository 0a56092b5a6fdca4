"""Cross-encoder routes: Cohere/Jina and TEI reranking, vLLM-style pair scores.

`/v1/rerank` (what `cohere.Client` calls), `/v2/rerank` (`cohere.ClientV2`) and `/rerank` take
either body shape (`documents` or TEI's `texts`); errors follow the route (Cohere's on the
`/v1` and `/v2` routes, TEI's on `/rerank`, OpenAI's on the score routes: server/shapes.py).
Everything else is the shared pipeline's: admission, limits, batching, drain, metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from litestar import Request, Response, post

from embedserve.models.kind import LATE_INTERACTION, RERANKER
from embedserve.reranker import Reranker, ranking
from embedserve.server.adapters.base import job_response
from embedserve.server.adapters.rerank_schemas import (
    TEI,
    RerankRequest,
    cohere_body,
    parse_rerank_request,
    parse_score_request,
    score_body,
    tei_body,
)
from embedserve.server.auth import require_api_key
from embedserve.server.errors import invalid
from embedserve.server.plumbing import read_parsed, state
from embedserve.server.registry import ModelRegistry, ServedModel, kind_of
from embedserve.server.tasks.pairs import PairsJob
from embedserve.server.tasks.token_vectors import MaxSimJob


def _reranker_for(registry: ModelRegistry, name: str | None, required: bool) -> ServedModel:
    """The named model; without a name, the first reranker served (TEI serves one model)."""
    if name is not None:
        return registry.get(name)
    if required:
        raise invalid(
            "you must provide a model parameter", param="model", code="missing_required_parameter"
        )
    model = registry.first_ready(RERANKER) or registry.first_ready(LATE_INTERACTION)
    if model is None:
        if not registry.ready:
            return next(m for m in registry.models if not m.ready)  # its require() says 503
        raise invalid(
            "no reranker is served; start the server with a cross-encoder "
            "(--model PATH, config.json naming a *ForSequenceClassification)",
            param="model",
            code="model_not_found",
        )
    return model


def _ranked(
    parsed: RerankRequest, reranker: Reranker, model: str, api_version: str
) -> Callable[[np.ndarray, int], bytes]:
    """The render of a rerank: the logits' relevance, rendered as `_ranked_scores` renders."""
    body = _ranked_scores(parsed, model, api_version)

    def render(logits: np.ndarray, tokens: int) -> bytes:
        return body(reranker.relevance(logits, raw_scores=parsed.raw_scores), tokens)

    return render


def _ranked_scores(
    parsed: RerankRequest, model: str, api_version: str
) -> Callable[[np.ndarray, int], bytes]:
    """The render of a late-interaction rerank: MaxSim scores, their order, the dialect's body."""

    def render(relevance: np.ndarray, tokens: int) -> bytes:
        order = ranking(relevance, parsed.top_n).tolist()
        scores = relevance.tolist()
        if parsed.dialect == TEI:
            return tei_body(parsed, order, scores)
        return cohere_body(parsed, model, order, scores, tokens, api_version)

    return render


async def _maxsim_score(
    request: Request[Any, Any, Any], parsed: Any, model: ServedModel, started: float
) -> Response[bytes]:
    """/v1/score on a ColBERT: one `text_1` against every `text_2` by MaxSim."""
    if len(parsed.firsts) != 1:
        raise invalid(
            "a late-interaction model scores one text_1 against text_2; send text_1 as a string",
            param="text_1",
        )
    server = state(request)
    engine, batcher = model.require(LATE_INTERACTION)
    job = MaxSimJob(
        engine,
        server.config,
        lambda scores, tokens: score_body(model.id, scores.tolist(), tokens),
        query=parsed.firsts[0],
        documents=parsed.seconds,
        first_param="text_1",
        param="text_2",
        truncate=parsed.truncate,
        instruction=parsed.instruction,
    )
    return await job_response(request, job, model.id, batcher, parsed.priority, started=started)


async def _rerank(request: Request[Any, Any, Any], api_version: str) -> Response[bytes]:
    started = time.perf_counter()
    server = state(request)
    parsed = await read_parsed(request, parse_rerank_request)
    model = _reranker_for(server.registry, parsed.model, required=parsed.dialect != TEI)
    reranker, batcher = model.require(RERANKER, LATE_INTERACTION)
    if kind_of(reranker) == LATE_INTERACTION:  # MaxSim of ColBERT (or BGE-M3) token vectors
        job: PairsJob[bytes] | MaxSimJob[bytes] = MaxSimJob(
            reranker,
            server.config,
            _ranked_scores(parsed, model.id, api_version),
            query=parsed.query,
            documents=parsed.documents,
            param=parsed.param,
            truncate=parsed.truncate,
            max_document_tokens=parsed.max_tokens_per_doc,
            instruction=parsed.instruction,
        )
        return await job_response(request, job, model.id, batcher, parsed.priority, started=started)
    job = PairsJob(
        reranker,
        server.config,
        _ranked(parsed, reranker, model.id, api_version),
        firsts=[parsed.query],
        seconds=parsed.documents,
        first_param="query",
        param=parsed.param,  # errors name the request's own field: TEI says `texts`
        noun=parsed.param,
        truncate=parsed.truncate,
        max_second_tokens=parsed.max_tokens_per_doc,
        instruction=parsed.instruction,
    )
    return await job_response(request, job, model.id, batcher, parsed.priority, started=started)


@post(["/v1/rerank", "/rerank"], before_request=require_api_key, status_code=200)
async def rerank_v1(request: Request[Any, Any, Any]) -> Response[bytes]:
    return await _rerank(request, "1")


@post("/v2/rerank", before_request=require_api_key, status_code=200)
async def rerank_v2(request: Request[Any, Any, Any]) -> Response[bytes]:
    return await _rerank(request, "2")


@post(["/v1/score", "/score"], before_request=require_api_key, status_code=200)
async def score(request: Request[Any, Any, Any]) -> Response[bytes]:
    started = time.perf_counter()
    server = state(request)
    parsed = await read_parsed(request, parse_score_request)
    model = _reranker_for(server.registry, parsed.model, required=False)
    reranker, batcher = model.require(RERANKER, LATE_INTERACTION)
    if kind_of(reranker) == LATE_INTERACTION:
        return await _maxsim_score(request, parsed, model, started)

    def render(logits: np.ndarray, tokens: int) -> bytes:
        scores = reranker.scores(logits, raw_scores=parsed.raw_scores).tolist()
        return score_body(model.id, scores, tokens)

    job = PairsJob(
        reranker,
        server.config,
        render,
        firsts=parsed.firsts,
        seconds=parsed.seconds,
        first_param="text_1",
        param="text_2",
        noun="pairs",
        truncate=parsed.truncate,
        instruction=parsed.instruction,
    )
    return await job_response(request, job, model.id, batcher, parsed.priority, started=started)


ROUTES = [rerank_v1, rerank_v2, score]
