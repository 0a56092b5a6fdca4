"""Classify the OpenAI `input` shapes: a string, strings, one token array, token arrays."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from numbers import Integral

import numpy as np

from embedserve.errors import InputError

TextsOrTokens = str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]]

# Encoded text, not text: refused everywhere a text or a token array may come. A bytearray or a
# memoryview is an array of byte values, which would otherwise pass for token ids.
BYTES_LIKE = (bytes, bytearray, memoryview)


@dataclass(frozen=True)
class Inputs:
    """One of `texts`, `token_arrays` or `mixed` is set: a batch of one kind, or (TEI's
    `inputs`, an array of texts and id arrays) a batch of both kinds in order."""

    texts: list[str] | None = None
    token_arrays: list[list[int]] | None = None
    mixed: list[str | list[int]] | None = None

    def __len__(self) -> int:
        if self.mixed is not None:
            return len(self.mixed)
        return len(self.texts if self.texts is not None else self.token_arrays or [])

    @property
    def has_ids(self) -> bool:
        """Whether any input is a token array."""
        return self.token_arrays is not None or self.mixed is not None

    def runs(self) -> list[tuple[int, Inputs]]:
        """The batch as consecutive runs of one kind, each with the index of its first input:
        the units a task prepares (a batch of one kind is one run)."""
        if self.mixed is None:
            return [(0, self)]
        runs: list[tuple[int, Inputs]] = []
        start = 0
        for is_text, group in groupby(self.mixed, key=lambda item: isinstance(item, str)):
            items: list = list(group)
            runs.append((start, Inputs(texts=items) if is_text else Inputs(token_arrays=items)))
            start += len(items)
        return runs


def check_utf8(text: str, where: str, *, index: int | None = None, param: str = "input") -> None:
    """A lone surrogate ("\\ud800", as a JSON escape or undecodable bytes read with
    surrogateescape give) is no UTF-8 text: the tokenizer refuses it with a TypeError that names
    no input, so it is refused here naming `where`. ASCII, the common case, costs no copy."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"{where} is not valid UTF-8 text: a lone surrogate at character {exc.start}",
            index=index,
            param=param,
        ) from None


def check_flag(value: object, param: str, *, optional: bool = False) -> None:
    """A yes/no argument (`truncate`, `normalize`): True or False (NumPy's too), or None where
    `optional`. Not its truthiness: "false" or "no" would mean yes, None or 0 no."""
    if optional and value is None:
        return
    if not isinstance(value, (bool, np.bool_)):
        allowed = "True, False or None" if optional else "True or False"
        raise InputError(f"{param} must be {allowed}, got {value!r}", param=param)


def check_positive_int(value: object, param: str) -> None:
    """A count argument (`top_k`, `top_n`, `max_tokens_per_doc`): None, or a whole number from 1,
    NumPy's integers too. A bool is no count, and 0 or -1 would be a slice end that cuts silently
    instead of refusing."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, Integral) or value < 1
    ):
        raise InputError(f"{param} must be a positive integer, got {value!r}", param=param)


def _is_token(value: object) -> bool:
    # Integral: NumPy's integers too (list(ids_array) holds np.int64); bool is no token id. The
    # exact-int test first: the server's JSON ids, a million a request, skip the ABC check.
    return type(value) is int or (isinstance(value, Integral) and not isinstance(value, bool))


def classify_inputs(inputs: TextsOrTokens) -> Inputs:
    """Sort `inputs` into texts or token arrays; anything else is an InputError naming it."""
    if isinstance(inputs, str):
        check_utf8(inputs, "input", index=0)
        return Inputs(texts=[inputs])
    if not isinstance(inputs, Sequence) or isinstance(inputs, BYTES_LIKE):
        # A NumPy array is no Sequence: its .tolist() is what it holds, as lists.
        hint = _hint(inputs)
        raise InputError(
            f"input must be a string, an array of strings, an array of integers or an array of "
            f"arrays of integers, not {type(inputs).__name__}{hint}"
        )
    items = list(inputs)
    if not items:
        return Inputs(texts=[])
    first = items[0]
    if isinstance(first, str):
        _check_all(items, lambda item: isinstance(item, str), "a string like input[0]")
        for index, text in enumerate(items):
            check_utf8(text, f"input[{index}]", index=index)
        return Inputs(texts=items)
    if _is_token(first):
        _check_all(items, _is_token, "an integer like input[0]")
        return Inputs(token_arrays=[items])
    if not _is_token_array(first):
        raise InputError(
            f"input[0] is {_describe(first)}: an array must hold only strings, only integers, "
            "or only arrays of integers",
            index=0,
        )
    _check_all(items, _is_token_array, "an array of integers like input[0]")
    return Inputs(token_arrays=[list(item) for item in items])


def text_batch(texts: object, param: str = "input") -> list[str]:
    """`texts` as a list: a string is one text, an array (or an iterator: a generator) must hold
    only strings; anything else (a set or a dict has no order of its own) is an InputError naming
    `param` (or `param[i]`), not a TypeError from inside the tokenizer."""
    if isinstance(texts, str):
        check_utf8(texts, param, index=0, param=param)
        return [texts]
    if not isinstance(texts, Sequence | Iterator) or isinstance(texts, BYTES_LIKE):
        raise InputError(
            f"{param} must be a string or an array of strings, not {type(texts).__name__}",
            param=param,
        )
    items = list(texts)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise InputError(
                f"{param}[{index}] is {_describe(item)}, expected a string",
                index=index,
                param=param,
            )
        check_utf8(item, f"{param}[{index}]", index=index, param=param)
    return items


def _is_token_array(item: object) -> bool:
    return (
        isinstance(item, Sequence)
        and not isinstance(item, (str, *BYTES_LIKE))
        and all(_is_token(t) for t in item)
    )


def _check_all(items: list[object], accepts, expected: str) -> None:
    """Raise for the first item that is not of the kind input[0] set (mixed arrays are invalid)."""
    for index, item in enumerate(items):
        if not accepts(item):
            raise InputError(
                f"input[{index}] is {_describe(item)}, expected {expected}: an array must hold only "
                "strings, only integers, or only arrays of integers",
                index=index,
            )


def _describe(item: object) -> str:
    if isinstance(item, Sequence) and not isinstance(item, (str, *BYTES_LIKE)):
        bad = next((t for t in item if not _is_token(t)), None)
        return f"an array holding {bad!r}" if bad is not None else "an array of integers"
    return "None" if item is None else f"{type_phrase(item)} ({item!r:.40})"


def _hint(inputs: object) -> str:
    """How to turn `inputs`, which is no input, into one, where there is an obvious way."""
    if isinstance(inputs, BYTES_LIKE):
        return " (decode it to a str)"
    return " (pass its .tolist())" if hasattr(inputs, "tolist") else ""


def type_phrase(value: object) -> str:
    """`value`'s type with its article, for messages: "an int", "a float", "None"."""
    if value is None:
        return "None"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def chunk_ranges(lengths: Sequence[int], max_chars: int) -> list[range]:
    """Consecutive index ranges whose lengths sum to at most `max_chars` (one item at least each):
    the bounded units in which a request's texts are tokenized."""
    ranges: list[range] = []
    start = total = 0
    for index, length in enumerate(lengths):
        if index > start and total + length > max_chars:
            ranges.append(range(start, index))
            start, total = index, 0
        total += length
    if start < len(lengths):
        ranges.append(range(start, len(lengths)))
    return ranges
