"""Rerank and score requests as clients send them, and the responses each API expects.

One body parser for `/v1/rerank`, `/v2/rerank` and `/rerank`: a body with `documents` is the
Cohere/Jina shape, a body with `texts` is TEI's. Both parse into one `RerankRequest`; limits are
checked by the pairs task (`server.tasks.pairs`, through `server.limits`), not here.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec

from embedserve.admission import Priority
from embedserve.classification import check_truncation_direction
from embedserve.server.errors import invalid
from embedserve.server.fields import (
    decode_object,
    kind_of,
    optional,
    priority_field,
    refuse_unknown,
    tei_direction,
)

COHERE = "cohere"
TEI = "tei"
# Cohere v1/v2 and Jina fields; `truncate` and `raw_scores` are embedserve's (and TEI's) extensions.
COHERE_FIELDS = frozenset(
    {
        "model",
        "query",
        "documents",
        "top_n",
        "return_documents",
        "max_tokens_per_doc",
        "truncate",
        "raw_scores",
        "priority",
        "instruction",
    }
)
# `instruction` is an LLM reranker's task (Qwen3-Reranker's <Instruct>); cross-encoders refuse it.
TEI_FIELDS = frozenset(
    {
        "model",
        "query",
        "texts",
        "truncate",
        "truncation_direction",
        "raw_scores",
        "return_text",
        "priority",
        "instruction",
    }
)
SCORE_FIELDS = frozenset(
    {"model", "text_1", "text_2", "truncate", "raw_scores", "priority", "instruction"}
)


@dataclass(frozen=True)
class RerankRequest:
    dialect: str  # COHERE or TEI
    query: str
    documents: list[str]
    originals: list[Any]  # each document as sent, echoed by return_documents
    model: str | None = None
    top_n: int | None = None
    return_documents: bool = False
    max_tokens_per_doc: int | None = None
    truncate: bool | None = None  # None: the server's --auto-truncate setting
    raw_scores: bool = False
    priority: Priority | None = None  # None: the X-Priority header's, else interactive
    instruction: str | None = None

    @property
    def param(self) -> str:
        """The field errors about one document name."""
        return "texts" if self.dialect == TEI else "documents"


@dataclass(frozen=True)
class ScoreRequest:
    """vLLM's `/v1/score`: one text against many (`firsts` holds it once), or two lists
    pairwise."""

    firsts: list[str]
    seconds: list[str]
    model: str | None = None
    truncate: bool | None = None
    raw_scores: bool = False
    priority: Priority | None = None  # None: the X-Priority header's, else interactive
    instruction: str | None = None


def parse_rerank_request(body: bytes) -> RerankRequest:
    raw = decode_object(body)
    if "texts" in raw and "documents" in raw:
        raise invalid(
            "send either `documents` (Cohere/Jina) or `texts` (TEI), not both", param="texts"
        )
    dialect = TEI if "texts" in raw else COHERE
    refuse_unknown(raw, TEI_FIELDS if dialect == TEI else COHERE_FIELDS)
    query = _query(raw)
    if dialect == TEI:
        _tei_direction(raw)
        originals = _strings(raw.get("texts"), "texts")
        documents = list(originals)
    else:
        originals, documents = _documents(raw.get("documents"))
    shared = _shared(raw)
    if dialect == TEI:
        return RerankRequest(
            TEI, query, documents, originals, return_documents=_flag(raw, "return_text"), **shared
        )
    return RerankRequest(
        COHERE,
        query,
        documents,
        originals,
        top_n=_positive(raw, "top_n"),
        return_documents=_flag(raw, "return_documents"),
        max_tokens_per_doc=_positive(raw, "max_tokens_per_doc"),
        **shared,
    )


def parse_score_request(body: bytes) -> ScoreRequest:
    raw = decode_object(body)
    refuse_unknown(raw, SCORE_FIELDS)
    firsts = _one_or_many(raw.get("text_1"), "text_1")
    seconds = _one_or_many(raw.get("text_2"), "text_2")
    if len(firsts) != 1 and len(firsts) != len(seconds):
        raise invalid(
            f"text_1 has {len(firsts)} texts and text_2 {len(seconds)}: send one text_1 to score "
            "against every text_2, or two lists of the same length to score pairwise",
            param="text_2",
        )
    return ScoreRequest(firsts, seconds, **_shared(raw))


# -- responses --


def cohere_body(
    request: RerankRequest,
    model: str,
    order: list[int],
    scores: list[float],
    tokens: int,
    api_version: str,
) -> bytes:
    """Cohere's response (`id`, `results`, `meta`) with Jina's `model` and `usage` alongside."""
    results = []
    for index in order:
        item: dict[str, Any] = {"index": index, "relevance_score": scores[index]}
        if request.return_documents:
            original = request.originals[index]
            item["document"] = original if isinstance(original, dict) else {"text": original}
        results.append(item)
    return msgspec.json.encode(
        {
            "id": str(uuid.uuid4()),
            "model": model,
            "results": results,
            "meta": {
                "api_version": {"version": api_version},
                "billed_units": {"search_units": 1},
                "tokens": {"input_tokens": tokens, "output_tokens": 0},
            },
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def tei_body(request: RerankRequest, order: list[int], scores: list[float]) -> bytes:
    results = []
    for index in order:
        item: dict[str, Any] = {"index": index, "score": scores[index]}
        if request.return_documents:
            item["text"] = request.documents[index]
        results.append(item)
    return msgspec.json.encode(results)


def score_body(model: str, scores: list[Any], tokens: int) -> bytes:
    """vLLM's score response; a multi-label head gives each pair a list of label scores."""
    return msgspec.json.encode(
        {
            "id": f"score-{uuid.uuid4().hex}",
            "object": "list",
            "created": int(time.time()),
            "model": model,
            "data": [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
        }
    )


# -- fields --


def _shared(raw: dict[str, Any]) -> dict[str, Any]:
    """The fields every body shape (Cohere/Jina, TEI, score) has, parsed one way for all."""
    return {
        "model": optional(raw, "model", str),
        "truncate": optional(raw, "truncate", bool),
        "raw_scores": _flag(raw, "raw_scores"),
        "priority": priority_field(raw),
        "instruction": optional(raw, "instruction", str),
    }


def _flag(raw: dict[str, Any], name: str) -> bool:
    """An optional boolean whose absence (or null) means false."""
    return bool(optional(raw, name, bool))


def _query(raw: dict[str, Any]) -> str:
    query = raw.get("query")
    if not isinstance(query, str):
        raise invalid(
            "'query' is a required property and must be a string"
            if query is None
            else f"query must be a string, not {kind_of(query)}",
            param="query",
            code="missing_required_parameter" if query is None else "invalid_type",
        )
    return query


def _tei_direction(raw: dict[str, Any]) -> None:
    check_truncation_direction(tei_direction(optional(raw, "truncation_direction", str)), True)


def _strings(value: Any, param: str) -> list[str]:
    if value is None:
        raise invalid(
            f"'{param}' is a required property", param=param, code="missing_required_parameter"
        )
    if not isinstance(value, list):
        raise invalid(
            f"{param} must be an array of strings, not {kind_of(value)}",
            param=param,
            code="invalid_type",
        )
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise invalid(
                f"{param}[{index}] must be a string, not {kind_of(item)}",
                param=param,
                code="invalid_type",
            )
    return value


def _documents(value: Any) -> tuple[list[Any], list[str]]:
    """Cohere's documents: strings, or objects whose `text` is ranked."""
    if value is None:
        raise invalid(
            "'documents' is a required property",
            param="documents",
            code="missing_required_parameter",
        )
    if not isinstance(value, list):
        raise invalid(
            f"documents must be an array of strings or of objects with a `text` field, not "
            f"{kind_of(value)}",
            param="documents",
            code="invalid_type",
        )
    texts: list[str] = []
    for index, item in enumerate(value):
        if isinstance(item, dict):
            item = item.get("text")
            if not isinstance(item, str):
                raise invalid(
                    f"documents[{index}] is an object without a string `text` field",
                    param="documents",
                    code="invalid_type",
                )
        elif not isinstance(item, str):
            raise invalid(
                f"documents[{index}] must be a string or an object with a `text` field, not "
                f"{kind_of(item)}",
                param="documents",
                code="invalid_type",
            )
        texts.append(item)
    return value, texts


def _one_or_many(value: Any, param: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    return _strings(value, param)


def _positive(raw: dict[str, Any], name: str) -> int | None:
    value = optional(raw, name, int)
    if value is not None and value < 1:
        raise invalid(f"{name} must be at least 1, got {value}", param=name)
    return value
