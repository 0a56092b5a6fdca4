"""Errors about one request's inputs, carrying which input and which parameter was wrong."""

from __future__ import annotations


class InputError(ValueError):
    """An input the engine cannot embed. `index` is the input's position, when one input is at fault."""

    code = "invalid_input"

    def __init__(self, message: str, *, index: int | None = None, param: str = "input") -> None:
        super().__init__(message)
        self.index = index
        self.param = param


class InputTooLongError(InputError):
    code = "context_length_exceeded"

    def __init__(self, index: int, tokens: int, limit: int) -> None:
        super().__init__(
            f"input[{index}] has {tokens} tokens, more than the model's limit of {limit}; "
            "shorten it or allow truncation",
            index=index,
        )
        self.tokens = tokens
        self.limit = limit


class InvalidTokenError(InputError):
    code = "invalid_token_id"
