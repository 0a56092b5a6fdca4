"""The model's tokenizer on its own: texts → tokens with offsets (tokenize), ids → texts (decode).

No model runs, but the same admission, limits, bounded steps off the event loop and drain apply:
a 10 MB text or three million ids is refused by the cheap checks before any tokenizer work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import numpy as np
from tokenizers import Encoding

from embedserve.engine import Engine
from embedserve.inputs import chunk_ranges
from embedserve.server.config import ServerConfig
from embedserve.server.limits import (
    CHUNK_CHARS,
    DEFAULT_TOKENS_PER_CHAR,
    TokenBudget,
    check_characters,
    check_count,
    check_token_arrays,
)
from embedserve.server.pipeline import Job

R = TypeVar("R")
# Ids decoded per step: about as much tokenizer work as CHUNK_CHARS characters.
CHUNK_IDS = 16 * 1024
# Values written per token when rendering tokenize's answer (id, text, special, offsets).
VALUES_PER_TOKEN = 5


class TokenizeJob(Job[R], Generic[R]):
    """Each text's tokens (`tokenizers` encodings, untruncated), rendered by the adapter from
    (text, encoding) pairs."""

    def __init__(
        self,
        engine: Engine,
        config: ServerConfig,
        render: Callable[[list[tuple[str, Encoding]]], R],
        *,
        texts: list[str],
        add_special_tokens: bool = True,
        param: str = "inputs",
    ) -> None:
        limits = config.limits
        self.engine = engine
        self.render = render
        self.texts = texts
        self.add_special_tokens = add_special_tokens
        check_count(len(texts), limits.max_inputs, param)
        self.characters = check_characters([len(t) for t in texts], limits, param)
        self._budget = TokenBudget(limits, param)
        self._encodings: list[Encoding] = []

    def estimated_tokens(self, tokens_per_char: float = DEFAULT_TOKENS_PER_CHAR) -> int:
        return sum(int(len(text) * tokens_per_char) + 2 for text in self.texts)

    def steps(self) -> Iterator[Callable[[], None]]:
        for chunk in chunk_ranges([len(t) for t in self.texts], CHUNK_CHARS):
            yield lambda chunk=chunk: self._tokenize(chunk)

    @property
    def usage_tokens(self) -> int:
        return sum(len(encoding.ids) for encoding in self._encodings)

    @property
    def content_tokens(self) -> int:
        specials = self.engine.tokenizer.specials if self.add_special_tokens else 0
        return self.usage_tokens - specials * len(self._encodings)

    def finish_cost(self, outputs: np.ndarray | None) -> int:
        return VALUES_PER_TOKEN * self.usage_tokens

    def finish(self, outputs: np.ndarray | None) -> R:
        return self.render(list(zip(self.texts, self._encodings)))

    def _tokenize(self, chunk: range) -> None:
        encodings = self.engine.tokenizer.encodings(
            self.texts[chunk.start : chunk.stop], add_special_tokens=self.add_special_tokens
        )
        counts = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        self._budget.add(counts, chunk.start)
        self._encodings.extend(encodings)


class DecodeJob(Job[R], Generic[R]):
    """The text of each id array in the model's vocabulary."""

    def __init__(
        self,
        engine: Engine,
        config: ServerConfig,
        render: Callable[[list[str]], R],
        *,
        arrays: list[list[int]],
        skip_special_tokens: bool = True,
        param: str = "ids",
    ) -> None:
        limits = config.limits
        self.engine = engine
        self.render = render
        self.arrays = arrays
        self.skip_special_tokens = skip_special_tokens
        self.param = param
        check_count(len(arrays), limits.max_inputs, param)
        check_token_arrays([len(ids) for ids in arrays], limits, param, truncated=False)
        self._texts: list[str] = []

    def estimated_tokens(self, tokens_per_char: float = DEFAULT_TOKENS_PER_CHAR) -> int:
        return sum(len(ids) for ids in self.arrays)

    def steps(self) -> Iterator[Callable[[], None]]:
        for chunk in chunk_ranges([len(ids) for ids in self.arrays], CHUNK_IDS):
            yield lambda chunk=chunk: self._decode(chunk)

    @property
    def usage_tokens(self) -> int:
        return self.estimated_tokens()

    def finish_cost(self, outputs: np.ndarray | None) -> int:
        return sum(len(text) for text in self._texts)

    def finish(self, outputs: np.ndarray | None) -> R:
        return self.render(self._texts)

    def _decode(self, chunk: range) -> None:
        texts = self.engine.tokenizer.decode(
            self.arrays[chunk.start : chunk.stop],
            skip_special_tokens=self.skip_special_tokens,
            param=self.param,
            start=chunk.start,
        )
        self._texts.extend(texts)
