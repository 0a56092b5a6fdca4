"""Classify the OpenAI `input` shapes: a string, strings, one token array, token arrays."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

from embedserve.errors import InputError

TextsOrTokens = Union[str, Sequence[str], Sequence[int], Sequence[Sequence[int]]]


@dataclass(frozen=True)
class Inputs:
    """Either `texts` or `token_arrays` is set, never both."""

    texts: list[str] | None = None
    token_arrays: list[list[int]] | None = None

    def __len__(self) -> int:
        return len(self.texts if self.texts is not None else self.token_arrays or [])


def _is_token(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def classify_inputs(inputs: TextsOrTokens) -> Inputs:
    """Sort `inputs` into texts or token arrays; anything else is an InputError naming it."""
    if isinstance(inputs, str):
        return Inputs(texts=[inputs])
    if not isinstance(inputs, Sequence) or isinstance(inputs, (bytes, bytearray)):
        raise InputError(
            f"input must be a string, an array of strings, an array of integers or an array of "
            f"arrays of integers, not {type(inputs).__name__}"
        )
    items = list(inputs)
    if not items:
        return Inputs(texts=[])
    if all(isinstance(item, str) for item in items):
        return Inputs(texts=items)
    if all(_is_token(item) for item in items):
        return Inputs(token_arrays=[items])
    arrays: list[list[int]] = []
    for index, item in enumerate(items):
        if isinstance(item, (str, bytes)) or not isinstance(item, Sequence):
            raise InputError(
                f"input[{index}] is a {type(item).__name__}; an array must hold only strings, "
                "only integers, or only arrays of integers",
                index=index,
            )
        tokens = list(item)
        bad = next((t for t in tokens if not _is_token(t)), None)
        if bad is not None:
            raise InputError(
                f"input[{index}] holds {bad!r} ({type(bad).__name__}); token arrays hold integers",
                index=index,
            )
        arrays.append(tokens)
    return Inputs(token_arrays=arrays)
