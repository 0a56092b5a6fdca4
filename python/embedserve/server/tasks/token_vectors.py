"""Token vectors: every token's final hidden state of an embedder (TEI's /embed_all), or a
ColBERT's (PyLate's, or BGE-M3's head: `bge_m3.M3Colbert`) normalized query or document token
vectors; and MaxSim scores of one query against documents (rerank and score on a
late-interaction model, scored by the model's own `maxsim_scores`).

The response grows with tokens x dimensions, so the request's total is checked against
`max_token_values` as soon as each chunk is tokenized, before any inference (413).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import numpy as np
from litestar.status_codes import HTTP_413_REQUEST_ENTITY_TOO_LARGE

from embedserve.bge_m3 import M3Colbert
from embedserve.engine import Engine
from embedserve.errors import InputTooLongError
from embedserve.inputs import Inputs, chunk_ranges
from embedserve.late_interaction import ColBERT
from embedserve.preparing import Prepared
from embedserve.server.config import ServerConfig
from embedserve.server.encoding import check_finite, check_finite_each
from embedserve.server.errors import ApiError, invalid
from embedserve.server.limits import (
    CHUNK_CHARS,
    DEFAULT_TOKENS_PER_CHAR,
    TokenBudget,
    check_characters,
    check_count,
    check_inputs,
    check_not_empty,
    estimate_tokens,
)
from embedserve.server.tasks.rows import RowsJob
from embedserve.server.tasks.steps import prepare_steps
from embedserve.server.token_arrays import model_content

R = TypeVar("R")


# What gives token vectors: an embedder's hidden states, or a ColBERT head's projections.
TokenModel = Engine | ColBERT | M3Colbert


def token_width(model: TokenModel) -> int:
    """Values per token vector: a ColBERT's projection, an embedder's hidden size."""
    if isinstance(model, Engine):
        return int(model.session.hidden_size or model.model_info.dimension)
    return model.model_info.dimension


class TokenVectorsJob(RowsJob[np.ndarray, R], Generic[R]):
    """Each text's token vectors, rendered by the adapter from a list of [tokens, width]
    float32 matrices. `is_query` picks a ColBERT's query or document encoding (ignored by an
    embedder); `truncation_direction` and `prompt_name` are an embedder's (TEI's fields), which
    a ColBERT, with its own markers and cut, refuses."""

    def __init__(
        self,
        model: TokenModel,
        config: ServerConfig,
        render: Callable[[list[np.ndarray], int], R],
        *,
        inputs: Inputs,
        truncate: bool | None = None,
        truncation_direction: str = "right",
        prompt_name: str | None = None,
        is_query: bool = False,
        param: str = "inputs",
    ) -> None:
        super().__init__()
        if not isinstance(model, Engine):
            _refuse_embedder_options(model, truncation_direction, prompt_name, inputs, param)
        limits = config.limits
        self.truncation_direction = truncation_direction
        self.prompt_name = prompt_name
        self.model = model
        self.render = render
        self.inputs = inputs
        self.is_query = is_query
        self.param = param
        self.truncate = config.truncates(truncate)
        if isinstance(model, Engine):
            model.check_token_states()
        self.width = token_width(model)
        self.max_values = limits.max_token_values
        self.size = len(inputs)
        check_count(self.size, limits.max_inputs, param)
        self.characters = check_inputs(inputs, limits, param)
        self._budget = TokenBudget(limits, param)

    @property
    def texts(self) -> list[str]:
        return self.inputs.texts or []

    def estimated_tokens(self, tokens_per_char: float = DEFAULT_TOKENS_PER_CHAR) -> int:
        return estimate_tokens(self.inputs, tokens_per_char, 3, self.model.model_info.max_tokens)

    def steps(self) -> Iterator[Callable[[], None]]:
        inputs = self.inputs
        if inputs.has_ids:  # only an embedder takes them (a ColBERT refused them)
            assert isinstance(self.model, Engine)
            inputs = model_content(self.model.tokenizer, inputs)
        yield from prepare_steps(inputs, self._prepare)

    def finish_cost(self, outputs: np.ndarray | None) -> int:
        return self.usage_tokens * self.width

    def finish(self, outputs: np.ndarray | None) -> R:
        states = [s.states for s in self._rows]  # type: ignore[attr-defined]
        check_finite_each(states, lambda index: f"{self.param}[{index}]")
        return self.render(states, self.usage_tokens)

    def _prepare(self, inputs: Inputs, start: int) -> None:
        try:
            if not isinstance(self.model, Engine):
                part = self.model.prepare(
                    inputs.texts or [], is_query=self.is_query, truncate=self.truncate, start=start
                )
            else:
                part = self.model.prepare(
                    inputs,
                    truncate=self.truncate,
                    truncation_direction=self.truncation_direction,
                    prompt_name=self.prompt_name,
                    param=self.param,
                    start=start,
                )
                part = part.keeping_states()
        except InputTooLongError as exc:  # numbered from `start`; name the route's field
            raise InputTooLongError(exc.index, exc.tokens, exc.limit, self.param) from exc
        self._budget.add(part.untruncated_tokens, start)
        self._content += int(part.untruncated_tokens.sum())
        self._rows.extend(part.sequences)
        self._check_values()

    def _check_values(self) -> None:
        values = self.usage_tokens * self.width
        if values > self.max_values:
            raise ApiError(
                HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                f"The response would hold {values} values ({self.usage_tokens} tokens x "
                f"{self.width} dimensions so far), more than the server's limit of "
                f"{self.max_values} (--max-token-values); send fewer or shorter {self.param}",
                param=self.param,
                code="response_too_large",
            )


def _refuse_embedder_options(
    model: ColBERT | M3Colbert,
    truncation_direction: str,
    prompt_name: str | None,
    inputs: Inputs,
    param: str,
) -> None:
    """A ColBERT refuses an embedder's options rather than ignoring them: a client sending one
    expects it to change the vectors. Token ids too: PyLate encodes texts only (its `tokenize`
    puts the [Q] or [D] marker after the first token and expands queries with [MASK]), so no id
    array a client sends is the sequence the model would compute."""
    name = model.model_info.name
    for field, value, default in (
        ("truncation_direction", truncation_direction, "right"),
        ("prompt_name", prompt_name, None),
    ):
        if value != default:
            raise invalid(
                f"{field} is an embedder's; {name} is a ColBERT, which cuts the end of a text "
                "and takes no prompt",
                param=field,
            )
    if inputs.has_ids:
        raise invalid(
            f"{param} as token ids are an embedder's; {name} is a ColBERT, which marks each text "
            "as a query or a document when it tokenizes it: send texts",
            param=param,
            code="invalid_type",
        )


class MaxSimJob(RowsJob[np.ndarray, R], Generic[R]):
    """One query against documents on a ColBERT: the query is tokenized once and computed as one
    row with the documents; `finish` renders the MaxSim scores [documents].

    The query is held to the documents' limits and `truncate` and counted once in the request's
    tokens; errors name each side by its field (`first_param`: `query`, `text_1`; `param`).
    `max_document_tokens` cuts each document's tokens first (Cohere's `max_tokens_per_doc`).
    """

    def __init__(
        self,
        model: ColBERT | M3Colbert,
        config: ServerConfig,
        render: Callable[[np.ndarray, int], R],
        *,
        query: str,
        documents: list[str],
        first_param: str = "query",
        param: str = "documents",
        truncate: bool | None = None,
        max_document_tokens: int | None = None,
        instruction: str | None = None,
    ) -> None:
        super().__init__()
        if instruction is not None:
            # Refused rather than ignored: a client sending one expects it to change the scores.
            raise invalid(
                "this model takes no instruction: it is a late-interaction (ColBERT) model, whose "
                "query and document token vectors are scored by MaxSim with no prompt; only an "
                "LLM reranker reads one. Leave instruction out",
                param="instruction",
                code="unsupported_parameter",
            )
        limits = config.limits
        self.model = model
        self.render = render
        self.query, self.documents = query, documents
        self.first_param, self.param = first_param, param
        self.truncate = config.truncates(truncate)
        self.max_document_tokens = max_document_tokens
        self.size = len(documents) + 1
        check_count(len(documents), limits.max_documents, param)
        check_not_empty([len(query)], first_param)
        first = check_characters([len(query)], limits, first_param, single=True)
        self.characters = check_characters(
            [len(d) for d in documents], limits, param, already=first
        )
        self._budget = TokenBudget(limits, param, noun=param)

    def estimated_tokens(self, tokens_per_char: float = DEFAULT_TOKENS_PER_CHAR) -> int:
        cap = self.model.model_info.max_tokens
        texts = [self.query, *self.documents]
        return sum(min(int(len(t) * tokens_per_char) + 3, cap) for t in texts)

    def steps(self) -> Iterator[Callable[[], None]]:
        yield self._prepare_query
        for chunk in chunk_ranges([len(d) for d in self.documents], CHUNK_CHARS):
            yield lambda chunk=chunk: self._prepare(chunk)

    def finish_cost(self, outputs: np.ndarray | None) -> int:
        # MaxSim multiplies every query token with every document token: off the loop when large.
        query_tokens = len(self._rows[0]) if self._rows else 0
        return query_tokens * self.usage_tokens * self.model.model_info.dimension

    def finish(self, outputs: np.ndarray | None) -> R:
        states: list[Any] = [s.states for s in self._rows]  # type: ignore[attr-defined]
        scores = self.model.maxsim_scores(states[0], states[1:])
        # The query's vectors first: a NaN there would make every score NaN.
        check_finite_each(states[:1], lambda _: self.first_param)
        check_finite(scores, lambda index: f"{self.param}[{index}]")
        return self.render(scores, self.usage_tokens)

    def _prepare_query(self) -> None:
        part = self._prepared([self.query], 0, is_query=True)
        self._budget.add_single(int(part.untruncated_tokens[0]), self.first_param)
        self._content += int(part.untruncated_tokens.sum())
        self._rows.extend(part.sequences)

    def _prepare(self, chunk: range) -> None:
        part = self._prepared(self.documents[chunk.start : chunk.stop], chunk.start, is_query=False)
        self._budget.add(part.untruncated_tokens, chunk.start)
        self._content += int(part.untruncated_tokens.sum())
        self._rows.extend(part.sequences)

    def _prepared(self, texts: list[str], start: int, *, is_query: bool) -> Prepared:
        """The query's or documents' sequences, under the request's `truncate`."""
        try:
            return self.model.prepare(
                texts,
                is_query=is_query,
                truncate=self.truncate,
                start=start,
                max_tokens=None if is_query else self.max_document_tokens,
            )
        except InputTooLongError as exc:  # the model says `input`; name the request's field
            param = self.first_param if is_query else self.param
            raise InputTooLongError(
                exc.index, exc.tokens, exc.limit, param, single=is_query
            ) from exc
