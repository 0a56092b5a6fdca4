"""Embeddings: texts or token arrays → pooled vectors, cut and normalized as asked."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import numpy as np

from embedserve.engine import Engine
from embedserve.errors import InputTooLongError
from embedserve.inputs import Inputs
from embedserve.preparing import Prepared, prompt_name_for
from embedserve.server.config import ServerConfig
from embedserve.server.encoding import check_finite
from embedserve.server.limits import (
    DEFAULT_TOKENS_PER_CHAR,
    TokenBudget,
    check_characters,
    check_count,
    check_dimensions,
    check_inputs,
    check_metadata,
    check_not_empty,
    estimate_tokens,
)
from embedserve.server.pipeline import Job
from embedserve.server.schemas import EmbeddingsRequest
from embedserve.server.tasks.steps import prepare_steps
from embedserve.vector_cache import merge_cached, split_cached

R = TypeVar("R")
# The finished vectors and the request's usage tokens → the adapter's result.
Render = Callable[[np.ndarray, int], R]
Resolve = Callable[[EmbeddingsRequest], EmbeddingsRequest]


def vectors(matrix: np.ndarray, tokens: int) -> np.ndarray:
    """The default render: the finished vectors themselves."""
    return matrix


class EmbedJob(Job[R], Generic[R]):
    """One embeddings request. Construction runs the cheap checks (raising a 400 for the first
    violation): counts, empty inputs, characters per input and per request, token-array lengths,
    metadata, dimensions. `param` is the API's name for the inputs (`texts`, `inputs`, ...),
    which its errors name; `last_param`, when given, names the last text instead, one sent in a
    field of its own and computed with the others (TEI /similarity's `source_sentence`);
    `single`: the request is one text, sent in the field `param` (Ollama's legacy `prompt`),
    whose errors name it as a last text's do, without an index; `dimensions_param` is the API's
    name for `dimensions` (Cohere's `output_dimension`)."""

    def __init__(
        self,
        request: EmbeddingsRequest,
        engine: Engine,
        config: ServerConfig,
        render: Render[R],
        *,
        resolve: Resolve | None = None,
        param: str = "input",
        last_param: str | None = None,
        single: bool = False,
        dimensions_param: str = "dimensions",
    ) -> None:
        self.request = request
        self.param = param
        # A lone text is its request's last text, in a field of its own: the same names serve.
        self.last_param = param if single else last_param
        self.engine = engine
        self.info = engine.model_info
        self.render = render
        # Turns token arrays into texts (tiktoken ids decoded, server.token_arrays); it runs as
        # the first step, after the cheap checks have counted the ids as sent.
        self._resolve = resolve
        limits = config.limits
        self.truncate = config.truncates(request.truncate)
        inputs = request.inputs
        self.size = len(inputs)
        # The last text, when it has a field of its own, is counted with the items, not as one
        # (a lone text is the request's one item).
        items = self.size if last_param is None else self.size - 1
        check_count(items, limits.max_inputs, param, plus_one=last_param)
        if inputs.texts is not None and self.last_param is not None:
            lengths = [len(text) for text in inputs.texts]
            check_not_empty(lengths[:-1], param)
            check_not_empty(lengths[-1:], self.last_param, single=True)
            items = check_characters(lengths[:-1], limits, param)
            self.characters = check_characters(
                lengths[-1:], limits, self.last_param, already=items, single=True
            )
        else:
            self.characters = check_inputs(inputs, limits, param)
        check_metadata(request.metadata, limits)
        check_dimensions(request.dimensions, self.info, config.allow_dimensions, dimensions_param)
        self._budget = TokenBudget(limits, param)
        self._parts: list[Prepared] = []
        self._prepared: Prepared | None = None
        self._found: list[np.ndarray | None] = []
        self._missing: list[int] = []

    def estimated_tokens(self, tokens_per_char: float = DEFAULT_TOKENS_PER_CHAR) -> int:
        """Exact for token arrays, from the characters for texts (special tokens added, each
        input cut at the model's limit)."""
        return estimate_tokens(self.request.inputs, tokens_per_char, 2, self.info.max_tokens)

    def steps(self) -> Iterator[Callable[[], None]]:
        if self.request.inputs.has_ids and self._resolve is not None:
            yield self._decode
        yield from prepare_steps(self.request.inputs, self._prepare)

    @property
    def prepared(self) -> Prepared:
        if self._prepared is None:
            parts = self._parts
            self._prepared = (
                parts[0]
                if len(parts) == 1
                else Prepared(
                    [s for part in parts for s in part.sequences],
                    np.concatenate([part.untruncated_tokens for part in parts]),
                )
            )
        return self._prepared

    def rows(self) -> list[np.ndarray]:
        """The sequences the model has not computed before (the engine's exact cache)."""
        sequences = self.prepared.sequences
        self._found, self._missing = split_cached(self.engine.cache, sequences)
        return [sequences[i] for i in self._missing]

    @property
    def usage_tokens(self) -> int:
        # Plain lengths: a NumPy array and its sum cost more than the addition for a few rows.
        return sum(map(len, self.prepared.sequences))

    @property
    def content_tokens(self) -> int:
        prepared = self.prepared
        return int(prepared.untruncated_tokens.sum()) - self.engine.tokenizer.specials * len(
            prepared.sequences
        )

    def finish_cost(self, outputs: np.ndarray | None) -> int:
        return self.size * self.info.dimension

    def finish(self, outputs: np.ndarray | None) -> R:
        assert outputs is not None
        pooled = merge_cached(
            self.engine.cache,
            self.prepared.sequences,
            self._found,
            self._missing,
            outputs,
            self.info.dimension,
        )
        request = self.request
        matrix = self.engine.finish(
            pooled, dimensions=request.dimensions, normalize=request.normalize
        )
        # Here rather than in each render, so every route and encoding refuses them alike.
        check_finite(matrix, self._input_name)
        return self.render(matrix, self.usage_tokens)

    def _input_name(self, index: int) -> str:
        if self.last_param is not None and index == self.size - 1:
            return self.last_param
        return f"{self.param}[{index}]"

    def _decode(self) -> None:
        assert self._resolve is not None
        self.request = self._resolve(self.request)
        inputs = self.request.inputs
        items = inputs.texts if inputs.mixed is None else inputs.mixed
        self.characters = sum(len(item) for item in items or [] if isinstance(item, str))

    def _prepare(self, inputs: Inputs, start: int) -> None:
        try:
            part = self.engine.prepare(
                inputs,
                truncate=self.truncate,
                truncation_direction=self.request.truncation_direction,
                prompt_name=prompt_name_for(
                    self.request.input_type, self.info.prompts, self.request.prompt_name
                ),
                param=self.param,
                max_tokens=self.request.max_tokens,
                start=start,
            )
        except InputTooLongError as exc:  # numbered from `start`: name the route's field
            index = exc.index or 0
            if self.last_param is not None and index == self.size - 1:
                raise InputTooLongError(
                    0, exc.tokens, exc.limit, self.last_param, single=True
                ) from exc
            raise InputTooLongError(
                index, exc.tokens, exc.limit, self.param, limit_name=exc.limit_name
            ) from exc
        if self.request.sent_token_counts is None:
            # Decoded token arrays skip this: the cheap checks counted their ids as sent.
            untruncated = part.untruncated_tokens
            if self.last_param is not None and start + len(untruncated) == self.size:
                self._budget.add(untruncated[:-1], start)
                self._budget.add_last(int(untruncated[-1]), self.last_param)
            else:
                self._budget.add(untruncated, start)
        self._parts.append(part)
