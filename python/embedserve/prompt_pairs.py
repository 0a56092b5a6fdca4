"""Query-document pairs as an LLM reranker reads them: Qwen3-Reranker's chat prompt.

The model card's prompt is `prefix + "<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>:
{document}" + suffix`, the middle tokenized as one text and cut from the right to fit. Here the
middle is tokenized in two parts, split where the pre-tokenizer splits anyway (before the space
that opens the document), so the query part is tokenized once per request and the ids are the
same: byte-level BPE and WordPiece never merge across a pre-token boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedserve.pairs import Pair, PairTemplate, PairTokenizer, PairTooLongError, PreparedPairs

PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
YES, NO = "yes", "no"


def query_part(query: str, instruction: str) -> str:
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>:"


def document_part(document: str) -> str:
    return " " + document


def yes_no_ids(tokenizer_json: Path) -> tuple[int, int]:
    """The ids of the "no" and "yes" tokens, whose logits score relevance."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    no, yes = tokenizer.token_to_id(NO), tokenizer.token_to_id(YES)
    if no is None or yes is None:
        raise ValueError(
            f"{tokenizer_json}: no single 'yes' and 'no' tokens; an LLM reranker scores the "
            "logits of those two tokens"
        )
    return no, yes


class PromptPairTokenizer(PairTokenizer):
    """The pair tokenizer of a yes/no LLM reranker: the prompt's prefix and suffix around each pair,
    the instruction (per call, else `instruction`) before the query, truncation from the right."""

    def __init__(
        self,
        path: Path,
        max_length: int,
        mode: str = "transformers",
        instruction: str | None = None,
    ) -> None:
        super().__init__(path, max_length, mode)
        self.instruction = instruction or DEFAULT_INSTRUCTION
        prefix, suffix = self.content_ids([PREFIX, SUFFIX])
        self.template = PairTemplate(
            prefix=tuple(prefix),
            middle=(),
            suffix=tuple(suffix),
            prefix_types=(0,) * len(prefix),
            first_type=0,
            middle_types=(),
            second_type=0,
            suffix_types=(0,) * len(suffix),
        )
        if self.template.specials >= max_length:
            raise ValueError(f"max length {max_length} leaves no room for a pair's tokens")

    def first_ids(self, texts: list[str], instruction: str | None = None) -> list[list[int]]:
        wanted = instruction or self.instruction
        return self.content_ids([query_part(text, wanted) for text in texts])

    def second_ids(self, texts: list[str]) -> list[list[int]]:
        return self.content_ids([document_part(text) for text in texts])

    def prepare(
        self,
        firsts: Sequence[list[int]],
        seconds: Sequence[list[int]],
        *,
        truncate: bool = True,
        max_second_tokens: int | None = None,
        param: str = "documents",
    ) -> PreparedPairs:
        """Pairs cut as the model card cuts them: the prompt's middle loses tokens from its end
        (the document's, then the query's if it alone is too long)."""
        room = self.max_length - self.template.specials
        specials = self.template.specials
        pairs: list[Pair] = []
        untruncated = np.empty(len(seconds), dtype=np.int64)
        for index, (first, second) in enumerate(zip(firsts, seconds)):
            if max_second_tokens is not None:
                second = second[:max_second_tokens]
            total = len(first) + len(second)
            untruncated[index] = total + specials
            if total > room:
                if not truncate:
                    raise PairTooLongError(index, total + specials, self.max_length, param)
                first = first[:room]
                second = second[: room - len(first)]
            pairs.append(self.template.build(first, second))
        return PreparedPairs(pairs, untruncated)
