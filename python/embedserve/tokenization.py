"""Text and token-array inputs to model-ready id sequences: special tokens, truncation, counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from embedserve.errors import InputError, InputTooLongError, InvalidTokenError
from embedserve.tokenizer_pipeline import load_tokenizer

DIRECTIONS = ("right", "left")


def check_direction(direction: object) -> None:
    """`direction` if it is one of DIRECTIONS, else an InputError naming truncation_direction.
    A string first: `in` compares a NumPy array element-wise, so ["left"] passed and an array
    of two raised a bare "truth value is ambiguous"."""
    if not isinstance(direction, str) or direction not in DIRECTIONS:
        raise InputError(
            f"truncation_direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}",
            param="truncation_direction",
        )


class ModelTokenizer:
    """A `tokenizers` tokenizer with dynamic padding, our own truncation, and its special tokens known.

    Truncation is ours, not the tokenizer's, so each input's untruncated length is known
    (for `truncate=False` errors and request limits) from a single tokenizer pass. `mode` is how
    tokenizer.json is read (tokenizer_pipeline.load_tokenizer). `special_tokens=False` leaves the
    post-processor's tokens out, as sentence-transformers' StaticEmbedding does.
    """

    def __init__(
        self,
        path: Path,
        max_length: int,
        mode: str = "transformers",
        *,
        special_tokens: bool = True,
    ) -> None:
        self._tokenizer = load_tokenizer(path, mode)
        self.max_length = max_length
        self.vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
        self.prefix, self.suffix = _special_tokens(self._tokenizer) if special_tokens else ([], [])
        if self.specials >= max_length:
            # Every text would be its special tokens alone (one vector for all), or more tokens
            # than the limit.
            raise ValueError(
                f"max_length {max_length} leaves no room for text: the model's special tokens "
                f"alone take {self.specials}"
            )
        self._encode_batch = getattr(
            self._tokenizer, "encode_batch_fast", self._tokenizer.encode_batch
        )

    @property
    def specials(self) -> int:
        return len(self.prefix) + len(self.suffix)

    def content_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text without special tokens (one batched call; releases the GIL)."""
        return [encoding.ids for encoding in self._encode_batch(texts, add_special_tokens=False)]

    def token_id(self, token: str) -> int | None:
        """The id of a token of the vocabulary (added tokens included), None if it has none."""
        return self._tokenizer.token_to_id(token)

    def encodings(self, texts: list[str], *, add_special_tokens: bool) -> list[Encoding]:
        """The tokenizer's own encodings (ids, token strings, character offsets), untruncated."""
        # Not encode_batch_fast: it skips the offsets.
        return self._tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)

    def token_strings(self, ids: list[int]) -> list[str]:
        """Each id's token as the vocabulary writes it ("##ing", "▁the"); "" for an unknown id."""
        return [self._tokenizer.id_to_token(i) or "" for i in ids]

    def decode(
        self,
        arrays: list[list[int]],
        *,
        skip_special_tokens: bool = True,
        param: str = "input",
        start: int = 0,
    ) -> list[str]:
        """Texts of model-vocabulary id arrays; InvalidTokenError names an array with a bad id
        as `param[start + index]`."""
        self.check_token_ids(arrays, param=param, start=start)
        return self._tokenizer.decode_batch(arrays, skip_special_tokens=skip_special_tokens)

    def check_token_ids(
        self, arrays: list[list[int]], *, param: str = "input", start: int = 0
    ) -> None:
        for index, ids in enumerate(arrays, start):
            if not ids:
                continue
            low, high = min(ids), max(ids)
            if low < 0 or high >= self.vocab_size:
                bad = low if low < 0 else high
                raise InvalidTokenError(
                    f"{param}[{index}] holds token id {bad}, outside the vocabulary "
                    f"(0..{self.vocab_size - 1})",
                    index=index,
                    param=param,
                )

    def model_sequence(
        self,
        index: int,
        ids: list[int],
        *,
        truncate: bool,
        direction: str,
        max_tokens: int | None = None,
    ) -> np.ndarray:
        """Special tokens around `ids`, cut to the model's limit (or the caller's `max_tokens`,
        special tokens included, when lower) on the `direction` side if allowed."""
        limit, limit_name = self.max_length, "the model's limit"
        if max_tokens is not None and max_tokens < limit:
            limit, limit_name = max_tokens, "max_tokens"
        room = max(0, limit - self.specials)
        if len(ids) > room:
            if not truncate:
                raise InputTooLongError(
                    index, len(ids) + self.specials, limit, limit_name=limit_name
                )
            ids = ids[:room] if direction == "right" else ids[len(ids) - room :]
        return np.asarray(self.prefix + ids + self.suffix, dtype=np.int64)


def _special_tokens(tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """What the post-processor puts before and after a single sequence, found by asking it."""
    probe = "hello"
    plain = tokenizer.encode(probe, add_special_tokens=False).ids
    full = tokenizer.encode(probe, add_special_tokens=True).ids
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    raise ValueError("cannot find where the tokenizer's special tokens go")
