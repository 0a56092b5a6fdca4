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
    """`param` names the field the input came in; `single`: it is one text (a rerank query),
    not an array, so its name takes no index."""

    code = "context_length_exceeded"

    def __init__(
        self,
        index: int,
        tokens: int,
        limit: int,
        param: str = "input",
        *,
        single: bool = False,
        limit_name: str = "the model's limit",
    ) -> None:
        where = param if single else f"{param}[{index}]"
        super().__init__(
            f"{where} has {tokens} tokens, more than {limit_name} of {limit}; "
            "shorten it or allow truncation",
            index=index,
            param=param,
        )
        self.tokens = tokens
        self.limit = limit
        # What set the limit: the model, or the request's own cap (Cohere's `max_tokens`).
        self.limit_name = limit_name


class InvalidTokenError(InputError):
    code = "invalid_token_id"
