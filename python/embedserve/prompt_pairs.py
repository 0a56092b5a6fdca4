"""Query-document pairs as an LLM reranker reads them: Qwen3-Reranker's chat prompt.

The model card's prompt is `prefix + "<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>:
{document}" + suffix`, the middle tokenized as one text and cut from the right to fit. Here the
middle is tokenized in two parts, split where the pre-tokenizer splits anyway (before the space
that opens the document), so the query part is tokenized once per request and the ids are the
same: byte-level BPE and WordPiece never merge across a pre-token boundary.
"""

from __future__ import annotations

from pathlib import Path

from embedserve.pairs import PairTemplate, PairTokenizer

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


def end_first(first: int, second: int, room: int) -> tuple[int, int]:
    """How many tokens of query and document part to keep, as the model card cuts the prompt's
    middle: from its end, so the document loses tokens first, then the query if it alone is too
    long."""
    keep_first = min(first, room)
    return keep_first, min(second, room - keep_first)


class PromptPairTokenizer(PairTokenizer):
    """The pair tokenizer of a yes/no LLM reranker: the prompt's prefix and suffix around each pair,
    the instruction (per call, else `instruction`) before the query, truncation from the right."""

    cut_rule = staticmethod(end_first)

    def __init__(
        self,
        path: Path,
        max_length: int,
        mode: str = "transformers",
        instruction: str | None = None,
    ) -> None:
        super().__init__(path, max_length, mode)
        # The model card's `format_instruction` defaults only a missing instruction: "" is kept.
        self.instruction = DEFAULT_INSTRUCTION if instruction is None else instruction

    def _pair_template(self) -> PairTemplate:
        prefix, suffix = self.content_ids([PREFIX, SUFFIX])
        return PairTemplate(
            prefix=tuple(prefix),
            middle=(),
            suffix=tuple(suffix),
            prefix_types=(0,) * len(prefix),
            first_type=0,
            middle_types=(),
            second_type=0,
            suffix_types=(0,) * len(suffix),
        )

    def first_ids(self, texts: list[str], instruction: str | None = None) -> list[list[int]]:
        wanted = self.instruction if instruction is None else instruction
        return self.content_ids([query_part(text, wanted) for text in texts])

    def second_ids(self, texts: list[str]) -> list[list[int]]:
        return self.content_ids([document_part(text) for text in texts])
