"""The one function that enforces request limits, with tokenization in the middle of it.

Cheap checks (counts, empty inputs, metadata, dimensions) run before the tokenizer so a request
that breaks them costs nothing; token limits run on the tokenizer's untruncated counts.
It runs on a worker thread: tokenizing is CPU work that must stay off the event loop.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from embedserve.engine import ModelInfo, Prepared
from embedserve.inputs import Inputs
from embedserve.server.config import Limits
from embedserve.server.errors import invalid
from embedserve.server.schemas import EmbeddingsRequest


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


def admit(
    request: EmbeddingsRequest,
    engine: Preparer,
    limits: Limits,
    *,
    auto_truncate: bool = True,
    allow_dimensions: bool = False,
) -> Prepared:
    """Check `request` against `limits` and the model, and tokenize it.

    The first violation raises a 400 ApiError (or the engine's InputError, also a 400).
    """
    info = engine.model_info
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
    empty = next((i for i, item in enumerate(items) if len(item) == 0), None)
    if empty is not None:
        what = "an empty string" if inputs.texts is not None else "an empty token array"
        raise invalid(
            f"input[{empty}] is {what}; every input must hold at least one token",
            param="input",
            code="empty_input",
        )

    _check_metadata(request.metadata, limits)
    _check_dimensions(request.dimensions, info, allow_dimensions)

    truncate = auto_truncate if request.truncate is None else request.truncate
    prepared = engine.prepare(
        inputs,
        truncate=truncate,
        truncation_direction=request.truncation_direction,
        prompt_name=_prompt_name(request, info),
    )

    untruncated = prepared.untruncated_tokens
    if request.sent_token_counts is not None:  # decoded token arrays count as the ids sent
        untruncated = np.asarray(request.sent_token_counts, dtype=np.int64)
    longest = int(untruncated.argmax())
    if untruncated[longest] > limits.max_input_tokens:
        raise invalid(
            f"input[{longest}] has {int(untruncated[longest])} tokens; at most "
            f"{limits.max_input_tokens} "
            "are allowed per input, even when truncation is on",
            param="input",
            code="context_length_exceeded",
        )
    total = int(untruncated.sum())
    if total > limits.max_request_tokens:
        raise invalid(
            f"the inputs hold {total} tokens in all; at most {limits.max_request_tokens} are "
            "allowed per request",
            param="input",
            code="too_many_tokens",
        )
    return prepared


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
