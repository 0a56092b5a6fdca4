"""Cross-encoder scores of text pairs: a rerank (one query, many documents) or a score request
(one `text_1` against every `text_2`, or two lists pairwise).

A text shared by every pair is tokenized once; the other side is tokenized in bounded chunks,
each chunk's pairs checked against the token limits as soon as they are built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import numpy as np

from embedserve.inputs import chunk_ranges
from embedserve.pairs import Pair, PairTooLongError, PreparedPairs, TextTooLongError
from embedserve.reranker import Reranker
from embedserve.server.config import ServerConfig
from embedserve.server.encoding import check_finite
from embedserve.server.errors import invalid
from embedserve.server.limits import (
    CHUNK_CHARS,
    DEFAULT_TOKENS_PER_CHAR,
    TokenBudget,
    check_characters,
    check_count,
    check_not_empty,
)
from embedserve.server.tasks.rows import RowsJob

R = TypeVar("R")
# The model's logits [pairs, labels] and the request's usage tokens → the adapter's result.
Render = Callable[[np.ndarray, int], R]


class PairRowsJob(RowsJob[Pair, R], Generic[R]):
    """What the pair-shaped tasks share: the model's rows are `Pair`s (two texts, or one text
    between its special tokens), and the result is `render(logits, usage tokens)`."""

    def __init__(self, render: Render[R]) -> None:
        super().__init__()
        self.render = render

    param: str  # the API's name for the items whose rows these are (`documents`, `inputs`)

    def finish(self, outputs: np.ndarray | None) -> R:
        assert outputs is not None
        check_finite(outputs, lambda index: f"{self.param}[{index}]")
        return self.render(outputs, self.usage_tokens)

    _budget: TokenBudget  # the request's token limits, set by each task's __init__

    def _add_chunk(self, start: int, prepare: Callable[[], PreparedPairs]) -> None:
        """Keep the rows `prepare` builds for the chunk from item `start`, once the request's
        token limits allow them; an item too long is named by its index in the whole request."""
        try:
            part = prepare()
        except (TextTooLongError, PairTooLongError) as exc:
            # Both errors take (index, tokens, limit, param): the same error, shifted.
            raise type(exc)(start + exc.index, exc.tokens, exc.limit, self.param) from exc
        self._budget.add(part.untruncated_tokens, start)
        self._rows.extend(part.pairs)


class PairsJob(PairRowsJob[R], Generic[R]):
    """Pairs (firsts[i], seconds[i]); a single first goes with every second and is sent once.
    The request's parser has checked that `firsts` holds one text or one per second.

    `first_param`/`param` name the two sides in errors (`query`/`documents`, `query`/`texts`,
    `text_1`/`text_2`); `noun` is what a pair is called in messages. `max_pairs` is the count
    limit: rerank and score take `max_documents` (Cohere's cap), TEI's /predict `max_inputs`
    (its `max_client_batch_size`, as for texts).
    """

    def __init__(
        self,
        reranker: Reranker,
        config: ServerConfig,
        render: Render[R],
        *,
        firsts: list[str],
        seconds: list[str],
        first_param: str,
        param: str,
        noun: str,
        truncate: bool | None = None,
        max_second_tokens: int | None = None,
        instruction: str | None = None,
        max_pairs: int | None = None,
    ) -> None:
        super().__init__(render)
        limits = config.limits
        self.reranker = reranker
        self.firsts, self.seconds = firsts, seconds
        self.param, self.noun = param, noun
        self.truncate = config.truncates(truncate)
        self.max_second_tokens = max_second_tokens
        self.instruction = instruction  # an LLM reranker's task (prompt_pairs)
        self.size = len(seconds)
        check_count(self.size, max_pairs or limits.max_documents, param)
        # What every pair is scored against must hold something; a second side may be empty.
        shared = len(firsts) == 1
        first_lengths = [len(text) for text in firsts]
        if shared and not first_lengths[0]:
            raise invalid(f"{first_param} must not be empty", param=first_param, code="empty_input")
        check_not_empty(first_lengths, first_param)
        # The shared text counts once toward the request, as it is sent and tokenized once.
        first_chars = check_characters(first_lengths, limits, first_param, noun=noun, single=shared)
        self.characters = check_characters(
            [len(text) for text in seconds], limits, param, noun=noun, already=first_chars
        )
        paired_with = f"the {first_param}" if shared else f"its {first_param}"
        self._budget = TokenBudget(limits, param, noun, paired_with)
        self._shared_ids: list[int] | None = None

    def estimated_tokens(self, tokens_per_char: float = DEFAULT_TOKENS_PER_CHAR) -> int:
        cap = self.reranker.model_info.max_tokens
        specials = self.reranker.tokenizer.template.specials
        firsts = self.firsts * len(self.seconds) if len(self.firsts) == 1 else self.firsts
        return sum(
            min(int((len(a) + len(b)) * tokens_per_char) + specials, cap)
            for a, b in zip(firsts, self.seconds)
        )

    def steps(self) -> Iterator[Callable[[], None]]:
        if len(self.firsts) == 1:
            yield self._tokenize_shared
            lengths = [len(text) for text in self.seconds]
        else:
            lengths = [len(a) + len(b) for a, b in zip(self.firsts, self.seconds)]
        for chunk in chunk_ranges(lengths, CHUNK_CHARS):
            yield lambda chunk=chunk: self._prepare(chunk)

    def _tokenize_shared(self) -> None:
        self._shared_ids = self.reranker.tokenizer.first_ids(self.firsts, self.instruction)[0]
        self._content += len(self._shared_ids)

    def _prepare(self, chunk: range) -> None:
        tokenizer = self.reranker.tokenizer
        seconds = tokenizer.second_ids(self.seconds[chunk.start : chunk.stop])
        if self._shared_ids is not None:
            firsts = [self._shared_ids] * len(seconds)
        else:
            firsts = tokenizer.first_ids(self.firsts[chunk.start : chunk.stop], self.instruction)
            self._content += sum(len(ids) for ids in firsts)
        self._content += sum(len(ids) for ids in seconds)
        self._add_chunk(
            chunk.start,
            lambda: tokenizer.prepare(
                firsts,
                seconds,
                truncate=self.truncate,
                max_second_tokens=self.max_second_tokens,
                param=self.param,
            ),
        )
