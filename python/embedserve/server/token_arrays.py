"""Token arrays in a request, read as `--token-encoding` says: tiktoken ids decoded to text (the
default, what OpenAI means), or ids in the model's own vocabulary (`model`).

Decoded arrays then go the way texts go (prompts, truncation, the model's tokenizer); the
per-input and per-request token limits count the ids as sent, and `usage` counts the model's.

TEI's routes take ids in the model's own vocabulary whatever the setting (`model_sequences`).
"""

from __future__ import annotations

import dataclasses

from embedserve.inputs import Inputs
from embedserve.server.schemas import EmbeddingsRequest
from embedserve.token_encodings import MODEL_ENCODING, TokenDecoder, load_encoding
from embedserve.tokenization import ModelTokenizer


class TokenArrays:
    def __init__(self, decoder: TokenDecoder | None) -> None:
        self.decoder = decoder

    @classmethod
    def for_encoding(cls, name: str) -> TokenArrays:
        """Load `name`'s rank file now (fetching it if need be); PullError if it cannot be had."""
        if name == MODEL_ENCODING:
            return cls(None)
        return cls(TokenDecoder(load_encoding(name)))

    @property
    def encoding(self) -> str:
        return self.decoder.name if self.decoder is not None else MODEL_ENCODING

    def resolve(self, request: EmbeddingsRequest) -> EmbeddingsRequest:
        """`request` with its token arrays decoded to texts; unchanged for texts or `model` ids.

        Runs on a worker thread (decoding is CPU work). InvalidTokenError names the input whose
        ids the encoding does not have.
        """
        arrays = request.inputs.token_arrays
        if self.decoder is None or arrays is None:
            return request
        texts = self.decoder.decode(arrays)
        return dataclasses.replace(
            request,
            inputs=Inputs(texts=texts),
            sent_token_counts=tuple(len(ids) for ids in arrays),
        )


def model_sequences(tokenizer: ModelTokenizer, request: EmbeddingsRequest) -> EmbeddingsRequest:
    """`request` with its token arrays read as TEI reads them (`model_content`)."""
    if not request.inputs.has_ids:
        return request
    return dataclasses.replace(request, inputs=model_content(tokenizer, request.inputs))


def model_content(tokenizer: ModelTokenizer, inputs: Inputs) -> Inputs:
    """`inputs` with each token array read as TEI reads one: a whole sequence of the model's
    vocabulary, as TEI's /tokenize (and a tokenizer's `input_ids`) give it, special tokens
    included. The model's leading and trailing special tokens, where an array has them, are
    taken off, so that the model's own are added once, after truncation (as for any token
    array); an array without them is content. The ids are checked by the model's tokenizer.
    A mixed batch's texts stay as they are."""
    if inputs.token_arrays is not None:
        return Inputs(token_arrays=[_content(tokenizer, ids) for ids in inputs.token_arrays])
    if inputs.mixed is not None:
        return Inputs(
            mixed=[
                item if isinstance(item, str) else _content(tokenizer, item)
                for item in inputs.mixed
            ]
        )
    return inputs


def _content(tokenizer: ModelTokenizer, ids: list[int]) -> list[int]:
    """`ids` less the model's leading and trailing special tokens, where it has them."""
    prefix, suffix = tokenizer.prefix, tokenizer.suffix
    start = len(prefix) if prefix and ids[: len(prefix)] == prefix else 0
    stop = (
        len(ids) - len(suffix) if suffix and ids[len(ids) - len(suffix) :] == suffix else len(ids)
    )
    return ids[start : max(start, stop)]
