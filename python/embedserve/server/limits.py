"""The one place that enforces request limits: cheap checks first, then bounded tokenization.

`Admission(request, engine, limits)` runs every check that needs no tokenizer at once: counts,
empty inputs, characters per input and per request, token-array lengths, metadata, dimensions.
They cost microseconds, so the server can refuse a request (or decide it must wait: 429) before
it spends anything on it. Characters cannot bound tokens from below, so the character limits are
generous (16 per allowed token) and only refuse what no allowed input could be.

`Admission.steps()` then tokenizes in chunks of at most CHUNK_CHARS characters, checking the token
limits after each chunk: tokenizing stops at the first input over `max_input_tokens` and as soon
as the request passes `max_request_tokens`, so no request holds a tokenizer thread for more than
one chunk at a time, or allocates more than a chunk's worth of tokens past its limits. The server
runs each step on its thread pool and queues the next only when the previous one is done, so
chunks of concurrent requests take turns (see `EmbeddingService`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np

from embedserve.engine import ModelInfo, Prepared
from embedserve.errors import InputTooLongError
from embedserve.inputs import Inputs, chunk_ranges
from embedserve.server.config import Limits
from embedserve.server.errors import invalid
from embedserve.server.schemas import EmbeddingsRequest

# Characters tokenized per step: about 10-30 ms of one tokenizer thread on a slow core.
CHUNK_CHARS = 64 * 1024
# Tokens per character assumed before any request was measured (English with WordPiece: ~0.23).
DEFAULT_TOKENS_PER_CHAR = 0.3


class Preparer(Protocol):
    model_info: ModelInfo

    def prepare(
        self,
        inputs: Inputs,
        *,
        truncate: bool = True,
        truncation_direction: str = "right",
        prompt_name: str | None = None,
    ) -> Prepared: ...


class Admission:
    """One request on its way through the limits. Construction runs the cheap checks (raising a
    400 ApiError for the first violation); `steps()` tokenizes; `prepared()` gives the result."""

    def __init__(
        self,
        request: EmbeddingsRequest,
        engine: Preparer,
        limits: Limits,
        *,
        auto_truncate: bool = True,
        allow_dimensions: bool = False,
        resolve: Callable[[EmbeddingsRequest], EmbeddingsRequest] | None = None,
    ) -> None:
        self.request = request
        # Turns token arrays into texts (tiktoken ids decoded, server.token_arrays); it runs as
        # the first step, after the cheap checks have counted the ids as sent.
        self._resolve = resolve
        self.engine = engine
        self.limits = limits
        self.info = engine.model_info
        self.truncate = auto_truncate if request.truncate is None else request.truncate
        self.characters = check_request(request, self.info, limits, allow_dimensions)
        self._parts: list[Prepared] = []
        self._tokens = 0

    def estimated_tokens(self, tokens_per_char: float = DEFAULT_TOKENS_PER_CHAR) -> int:
        """What the model will see, estimated without tokenizing: exact for token arrays, from
        the characters for texts (special tokens added, each input cut at the model's limit)."""
        inputs = self.request.inputs
        cap = self.info.max_tokens
        if inputs.token_arrays is not None:
            return sum(min(len(ids) + 2, cap) for ids in inputs.token_arrays)
        return sum(min(int(len(text) * tokens_per_char) + 2, cap) for text in inputs.texts or [])

    def steps(self) -> Iterator[Callable[[], None]]:
        """Bounded units of tokenizer work, to run in order (each may raise a 400)."""
        inputs = self.request.inputs
        if inputs.token_arrays is not None and self._resolve is not None:
            yield self._decode
            inputs = self.request.inputs
        if inputs.token_arrays is not None:
            # Token arrays were counted by check_request; only their ids remain to be checked.
            yield lambda: self._prepare(inputs, 0)
            return
        texts = inputs.texts or []
        for chunk in chunk_ranges([len(t) for t in texts], CHUNK_CHARS):
            yield lambda chunk=chunk: self._prepare(
                Inputs(texts=texts[chunk.start : chunk.stop]), chunk.start
            )

    def prepared(self) -> Prepared:
        if len(self._parts) == 1:
            return self._parts[0]
        return Prepared(
            [s for part in self._parts for s in part.sequences],
            np.concatenate([part.untruncated_tokens for part in self._parts]),
        )

    def _decode(self) -> None:
        assert self._resolve is not None
        self.request = self._resolve(self.request)

    def _prepare(self, inputs: Inputs, start: int) -> None:
        try:
            part = self.engine.prepare(
                inputs,
                truncate=self.truncate,
                truncation_direction=self.request.truncation_direction,
                prompt_name=_prompt_name(self.request, self.info),
            )
        except InputTooLongError as exc:  # name the input by its index in the whole request
            if not start:
                raise
            raise InputTooLongError(start + exc.index, exc.tokens, exc.limit) from exc
        untruncated = part.untruncated_tokens
        if self.request.sent_token_counts is not None:
            # Decoded token arrays: the token limits counted the ids as sent (check_request).
            self._parts.append(part)
            return
        over = np.flatnonzero(untruncated > self.limits.max_input_tokens)
        if over.size:
            first = int(over[0])
            raise _input_tokens_error(start + first, int(untruncated[first]), self.limits)
        self._tokens += int(untruncated.sum())
        if self._tokens > self.limits.max_request_tokens:
            done = start + len(untruncated)
            raise invalid(
                f"the first {done} inputs already hold {self._tokens} tokens; at most "
                f"{self.limits.max_request_tokens} are allowed per request",
                param="input",
                code="too_many_tokens",
            )
        self._parts.append(part)


def check_request(
    request: EmbeddingsRequest, info: ModelInfo, limits: Limits, allow_dimensions: bool
) -> int:
    """Every limit that needs no tokenizer; returns the request's characters (0 for tokens)."""
    inputs = request.inputs
    count = len(inputs)
    if count == 0:
        raise invalid("input must not be an empty array", param="input", code="empty_input")
    if count > limits.max_inputs:
        raise invalid(
            f"input has {count} items; at most {limits.max_inputs} are allowed per request",
            param="input",
            code="too_many_inputs",
        )
    items = inputs.texts if inputs.texts is not None else inputs.token_arrays or []
    lengths = [len(item) for item in items]
    empty = next((i for i, n in enumerate(lengths) if n == 0), None)
    if empty is not None:
        what = "an empty string" if inputs.texts is not None else "an empty token array"
        raise invalid(
            f"input[{empty}] is {what}; every input must hold at least one token",
            param="input",
            code="empty_input",
        )
    characters = 0
    if inputs.texts is not None:
        characters = _check_characters(lengths, limits)
    else:
        _check_token_arrays(lengths, limits)
    _check_metadata(request.metadata, limits)
    _check_dimensions(request.dimensions, info, allow_dimensions)
    return characters


def _check_characters(lengths: list[int], limits: Limits) -> int:
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    if lengths[longest] > limits.max_input_chars:
        raise invalid(
            f"input[{longest}] has {lengths[longest]} characters; at most "
            f"{limits.max_input_chars} are allowed per input",
            param="input",
            code="context_length_exceeded",
        )
    total = sum(lengths)
    if total > limits.max_request_chars:
        raise invalid(
            f"the inputs hold {total} characters in all; at most {limits.max_request_chars} "
            "are allowed per request",
            param="input",
            code="too_many_tokens",
        )
    return total


def _check_token_arrays(lengths: list[int], limits: Limits) -> None:
    """Token arrays are counted exactly (the model's special tokens not included)."""
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    if lengths[longest] > limits.max_input_tokens:
        raise _input_tokens_error(longest, lengths[longest], limits)
    total = sum(lengths)
    if total > limits.max_request_tokens:
        raise invalid(
            f"the inputs hold {total} tokens in all; at most {limits.max_request_tokens} are "
            "allowed per request",
            param="input",
            code="too_many_tokens",
        )


def _input_tokens_error(index: int, tokens: int, limits: Limits) -> Exception:
    return invalid(
        f"input[{index}] has {tokens} tokens; at most {limits.max_input_tokens} "
        "are allowed per input, even when truncation is on",
        param="input",
        code="context_length_exceeded",
    )


def _check_metadata(metadata: dict[str, str] | None, limits: Limits) -> None:
    if metadata is None:
        return
    if len(metadata) > limits.max_metadata_pairs:
        raise invalid(
            f"metadata has {len(metadata)} pairs; at most {limits.max_metadata_pairs} are allowed",
            param="metadata",
        )
    for key, value in metadata.items():
        if len(key) > limits.max_metadata_key_chars:
            raise invalid(
                f"metadata key {key[:20]!r}... has {len(key)} characters; at most "
                f"{limits.max_metadata_key_chars} are allowed",
                param="metadata",
            )
        if len(value) > limits.max_metadata_value_chars:
            raise invalid(
                f"metadata[{key!r}] has {len(value)} characters; at most "
                f"{limits.max_metadata_value_chars} are allowed",
                param="metadata",
            )


def _check_dimensions(dimensions: int | None, info: ModelInfo, allow_dimensions: bool) -> None:
    if dimensions is None:
        return
    if not info.supports_dimensions and not allow_dimensions:
        raise invalid(
            f"The model `{info.name}` does not support the dimensions parameter: it was not "
            "trained to be cut (Matryoshka). Leave dimensions out, or start the server with "
            "--allow-dimensions to cut it anyway.",
            param="dimensions",
            code="unsupported_parameter",
        )
    if not 1 <= dimensions <= info.dimension:
        raise invalid(
            f"dimensions must be between 1 and {info.dimension}, got {dimensions}",
            param="dimensions",
        )


def _prompt_name(request: EmbeddingsRequest, info: ModelInfo) -> str | None:
    """An explicit prompt_name wins; Azure's input_type picks the model's prompt of that name if it
    has one, and is ignored otherwise (the model's default prompt, if any, applies)."""
    if request.prompt_name is not None:
        return request.prompt_name
    if request.input_type in ("query", "document") and request.input_type in info.prompts:
        return request.input_type
    return None
