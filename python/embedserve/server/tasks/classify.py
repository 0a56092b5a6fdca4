"""Sequence-classification logits of single texts (TEI's `/predict`, vLLM's `/classify`): each text
between the tokenizer's own special tokens, tokenized in bounded chunks, each chunk checked
against the token limits as soon as it is built. Pairs of texts are the pairs task's
(`server.tasks.pairs`); labels and probabilities are the adapter's render.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from embedserve.inputs import chunk_ranges
from embedserve.reranker import Reranker
from embedserve.server.config import ServerConfig
from embedserve.server.limits import (
    CHUNK_CHARS,
    DEFAULT_TOKENS_PER_CHAR,
    TokenBudget,
    check_characters,
    check_count,
)
from embedserve.server.tasks.pairs import PairRowsJob, Render

R = TypeVar("R")


class TextsJob(PairRowsJob[R], Generic[R]):
    """Texts for a `*ForSequenceClassification` model, one model input each. An empty text is
    allowed: the model still sees its special tokens, as transformers' pipeline gives it them.

    `direction` is the side a too-long text loses tokens from; `max_tokens` a lower cut than the
    model's limit (vLLM's `truncate_prompt_tokens`, which implies truncation).
    """

    def __init__(
        self,
        classifier: Reranker,
        config: ServerConfig,
        render: Render[R],
        *,
        texts: list[str],
        param: str,
        truncate: bool | None = None,
        direction: str = "right",
        max_tokens: int | None = None,
    ) -> None:
        super().__init__(render)
        limits = config.limits
        self.classifier = classifier
        self.texts = texts
        self.param = param
        self.truncate = config.truncates(truncate)
        if max_tokens is not None:
            self.truncate = True
        self.direction = direction
        self.max_tokens = max_tokens
        self.size = len(texts)
        check_count(self.size, limits.max_inputs, param)
        self.characters = check_characters([len(text) for text in texts], limits, param)
        self._budget = TokenBudget(limits, param)

    def estimated_tokens(self, tokens_per_char: float = DEFAULT_TOKENS_PER_CHAR) -> int:
        cap = self.classifier.model_info.max_tokens
        specials = self.classifier.tokenizer.single.specials
        return sum(min(int(len(text) * tokens_per_char) + specials, cap) for text in self.texts)

    def steps(self) -> Iterator[Callable[[], None]]:
        for chunk in chunk_ranges([len(text) for text in self.texts], CHUNK_CHARS):
            yield lambda chunk=chunk: self._prepare(chunk)

    def _prepare(self, chunk: range) -> None:
        tokenizer = self.classifier.tokenizer
        ids = tokenizer.content_ids(self.texts[chunk.start : chunk.stop])
        self._content += sum(len(item) for item in ids)
        self._add_chunk(
            chunk.start,
            lambda: tokenizer.prepare_singles(
                ids,
                truncate=self.truncate,
                direction=self.direction,
                max_tokens=self.max_tokens,
                param=self.param,
            ),
        )
