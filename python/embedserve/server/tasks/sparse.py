"""Sparse vectors: texts → (token id, weight) pairs, pruned as asked (`top_k`, `threshold`).

The batcher carries one `SparseVector` per row (an object array [n, 1], `SparseEncoder.forward`);
`finish` prunes them and hands them to the adapter's render. Queries of an inference-free model
(`input_type: "query"`, SparseStaticEmbedding) run no model: `uses_model` is False, the route
passes no batcher, and `finish` looks their weights up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import numpy as np

from embedserve.errors import InputTooLongError
from embedserve.inputs import Inputs, chunk_ranges
from embedserve.preparing import Prepared, prompt_name_for
from embedserve.server.config import ServerConfig
from embedserve.server.encoding import check_finite_each
from embedserve.server.errors import invalid
from embedserve.server.limits import (
    CHUNK_CHARS,
    DEFAULT_TOKENS_PER_CHAR,
    TokenBudget,
    check_count,
    check_inputs,
    check_sparse_pairs,
    estimate_tokens,
)
from embedserve.server.pipeline import Job
from embedserve.server.tasks.steps import prepare_steps
from embedserve.server.token_arrays import model_content
from embedserve.sparse import (
    SparseEncoder,
    SparseVector,
    check_input_type,
    check_pruning,
)

R = TypeVar("R")
# The pruned vectors and the request's usage tokens → the adapter's result.
Render = Callable[[list[SparseVector], int], R]
PARAM = "inputs"


class SparseJob(Job[R], Generic[R]):
    """One sparse request. Construction runs the cheap checks (count, empty texts, characters,
    pruning options), raising a 400 for the first violation."""

    def __init__(
        self,
        encoder: SparseEncoder,
        config: ServerConfig,
        render: Render[R],
        *,
        inputs: Inputs,
        truncate: bool | None = None,
        truncation_direction: str = "right",
        prompt_name: str | None = None,
        top_k: int | None = None,
        threshold: float | None = None,
        input_type: str | None = None,
    ) -> None:
        limits = config.limits
        self.encoder = encoder
        self.render = render
        self.inputs = inputs
        self.truncate = config.truncates(truncate)
        self.truncation_direction = truncation_direction
        self.top_k, self.threshold = top_k, threshold
        self.size = len(inputs)
        check_count(self.size, limits.max_inputs, PARAM)
        self.characters = check_inputs(inputs, limits, PARAM)
        check_pruning(top_k, threshold)
        check_input_type(input_type)
        self.prompt_name = prompt_name_for(input_type, encoder.config.prompts, prompt_name)
        self.static = encoder.query if input_type == "query" else None
        if self.static is not None and inputs.has_ids:
            # Its queries are looked up by their own tokenizer's content ids, which need not be
            # the model's vocabulary (no special tokens, its own limit).
            raise invalid(
                f'{encoder.model_info.name} is inference-free: its queries (input_type "query") '
                "are texts, looked up by its own tokenizer; send the query as a text",
                param=PARAM,
                code="invalid_type",
            )
        self._budget = TokenBudget(limits, PARAM)
        self._parts: list[Prepared] = []
        self._static_ids: list[np.ndarray] = []
        self._static_content = 0

    @property
    def uses_model(self) -> bool:
        return self.static is None

    def estimated_tokens(self, tokens_per_char: float = DEFAULT_TOKENS_PER_CHAR) -> int:
        return estimate_tokens(self.inputs, tokens_per_char, 2, self.encoder.model_info.max_tokens)

    @property
    def texts(self) -> list[str]:
        return self.inputs.texts or []

    def steps(self) -> Iterator[Callable[[], None]]:
        if self.static is None:  # the model's tokenizer: texts, ids of its vocabulary or both
            inputs = model_content(self.encoder.tokenizer, self.inputs)
            yield from prepare_steps(inputs, self._prepare)
            return
        for chunk in chunk_ranges([len(t) for t in self.texts], CHUNK_CHARS):
            yield lambda chunk=chunk: self._prepare_static(chunk)

    def rows(self) -> list[np.ndarray]:
        return [s for part in self._parts for s in part.sequences]

    @property
    def usage_tokens(self) -> int:
        if self.static is not None:
            return sum(len(ids) for ids in self._static_ids)
        return sum(int(part.token_counts.sum()) for part in self._parts)

    @property
    def content_tokens(self) -> int:
        if self.static is not None:
            return self._static_content
        specials = self.encoder.tokenizer.specials
        return sum(
            int(p.untruncated_tokens.sum()) - specials * len(p.sequences) for p in self._parts
        )

    def finish_cost(self, outputs: np.ndarray | None) -> int:
        if outputs is None:
            return sum(len(ids) for ids in self._static_ids)
        return sum(len(v) for v in outputs[:, 0])

    def finish(self, outputs: np.ndarray | None) -> R:
        if self.static is not None:
            found = self.static.vectors(self._static_ids)
        else:
            assert outputs is not None
            found = list(outputs[:, 0])
        check_finite_each([v.values for v in found], lambda index: f"{PARAM}[{index}]")
        vectors = self.encoder.pruned(found, self.top_k, self.threshold)
        check_sparse_pairs(sum(len(v) for v in vectors), PARAM)
        return self.render(vectors, self.usage_tokens)

    def _prepare_static(self, chunk: range) -> None:
        assert self.static is not None
        texts = self.encoder.prompted(self.texts[chunk.start : chunk.stop], self.prompt_name)
        try:
            counts, ids = self.static.prepare(
                texts, truncate=self.truncate, direction=self.truncation_direction
            )
        except InputTooLongError as exc:  # name the input by its index in the whole request
            raise InputTooLongError(chunk.start + exc.index, exc.tokens, exc.limit, PARAM) from exc
        self._budget.add(counts, chunk.start)
        self._static_content += int(counts.sum())
        self._static_ids.extend(ids)

    def _prepare(self, inputs: Inputs, start: int) -> None:
        try:
            part = self.encoder.prepare(
                inputs,
                truncate=self.truncate,
                truncation_direction=self.truncation_direction,
                prompt_name=self.prompt_name,
                param=PARAM,
                start=start,
            )
        except InputTooLongError as exc:  # the encoder says `input`; name the route's field
            raise InputTooLongError(exc.index, exc.tokens, exc.limit, PARAM) from exc
        self._budget.add(part.untruncated_tokens, start)
        self._parts.append(part)
