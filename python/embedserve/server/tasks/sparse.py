"""Sparse vectors: texts → (token id, weight) pairs, pruned as asked (`top_k`, `threshold`).

The batcher carries one `SparseVector` per row (an object array [n, 1], `SparseEncoder.forward`);
`finish` prunes them and hands them to the adapter's render.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import numpy as np

from embedserve.errors import InputTooLongError
from embedserve.inputs import Inputs, chunk_ranges
from embedserve.preparing import Prepared
from embedserve.server.config import ServerConfig
from embedserve.server.limits import (
    CHUNK_CHARS,
    DEFAULT_TOKENS_PER_CHAR,
    TokenBudget,
    check_characters,
    check_count,
    check_not_empty,
)
from embedserve.server.pipeline import Job
from embedserve.sparse import SparseEncoder, SparseVector, check_pruning, prune

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
        texts: list[str],
        truncate: bool | None = None,
        truncation_direction: str = "right",
        prompt_name: str | None = None,
        top_k: int | None = None,
        threshold: float | None = None,
    ) -> None:
        limits = config.limits
        self.encoder = encoder
        self.render = render
        self.texts = texts
        self.truncate = config.auto_truncate if truncate is None else truncate
        self.truncation_direction = truncation_direction
        self.prompt_name = prompt_name
        self.top_k, self.threshold = top_k, threshold
        self.size = len(texts)
        check_count(self.size, limits.max_inputs, PARAM)
        lengths = [len(text) for text in texts]
        check_not_empty(lengths, PARAM)
        self.characters = check_characters(lengths, limits, PARAM)
        check_pruning(top_k, threshold)
        self._budget = TokenBudget(limits, PARAM)
        self._parts: list[Prepared] = []

    def estimated_tokens(self, tokens_per_char: float = DEFAULT_TOKENS_PER_CHAR) -> int:
        cap = self.encoder.model_info.max_tokens
        return sum(min(int(len(text) * tokens_per_char) + 2, cap) for text in self.texts)

    def steps(self) -> Iterator[Callable[[], None]]:
        for chunk in chunk_ranges([len(t) for t in self.texts], CHUNK_CHARS):
            yield lambda chunk=chunk: self._prepare(chunk)

    def rows(self) -> list[np.ndarray]:
        return [s for part in self._parts for s in part.sequences]

    @property
    def usage_tokens(self) -> int:
        return sum(int(part.token_counts.sum()) for part in self._parts)

    @property
    def content_tokens(self) -> int:
        specials = self.encoder.tokenizer.specials
        return sum(
            int(p.untruncated_tokens.sum()) - specials * len(p.sequences) for p in self._parts
        )

    def finish_cost(self, outputs: np.ndarray | None) -> int:
        return 0 if outputs is None else sum(len(v) for v in outputs[:, 0])

    def finish(self, outputs: np.ndarray | None) -> R:
        assert outputs is not None
        vectors = [prune(v, self.top_k, self.threshold) for v in outputs[:, 0]]
        return self.render(vectors, self.usage_tokens)

    def _prepare(self, chunk: range) -> None:
        try:
            part = self.encoder.prepare(
                Inputs(texts=self.texts[chunk.start : chunk.stop]),
                truncate=self.truncate,
                truncation_direction=self.truncation_direction,
                prompt_name=self.prompt_name,
            )
        except InputTooLongError as exc:  # name the input by its index in the whole request
            if not chunk.start:
                raise
            raise InputTooLongError(chunk.start + exc.index, exc.tokens, exc.limit) from exc
        self._budget.add(part.untruncated_tokens, chunk.start)
        self._parts.append(part)
