"""The embeddings request as clients send it: decode the JSON body ourselves and check each field's
type, so every mistake gets an OpenAI-shaped 400 that names the field.

Limits (how many inputs, how many tokens, metadata sizes, dimensions) are not checked here but in
the embed task (`server.tasks.embed`), through `server.limits`, the one place that holds them.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from embedserve.admission import Priority
from embedserve.errors import InputError
from embedserve.inputs import Inputs, classify_inputs
from embedserve.quantization import BYTE_ENCODINGS
from embedserve.server.errors import invalid
from embedserve.server.fields import decode_object, kind_of, optional, priority_field
from embedserve.tokenization import DIRECTIONS

# int8/uint8/binary/ubinary are an extension (as Infinity has): arrays of byte values.
ENCODING_FORMATS = ("float", "base64", *BYTE_ENCODINGS)
INPUT_TYPES = ("text", "query", "document")
EXTRA_PARAMETERS = ("error", "drop", "pass-through")
STANDARD_FIELDS = frozenset(
    {
        "model",
        "input",
        "encoding_format",
        "dimensions",
        "user",
        "metadata",
        "input_type",
        "extra_body",
    }
)
EXTENSION_FIELDS = frozenset(
    {"truncate", "truncation_direction", "normalize", "prompt_name", "priority"}
)
# Azure AI Foundry's versions: `v1`, `preview`, or a date with an optional `-preview`.
API_VERSION = re.compile(r"^(?:v1|preview|([0-9]{4})-([0-9]{2})-([0-9]{2})(?:-preview)?)$")


@dataclass(frozen=True)
class EmbeddingsRequest:
    inputs: Inputs
    model: str | None = None
    encoding_format: str = "float"
    dimensions: int | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    input_type: str | None = None
    truncate: bool | None = None  # None: the server's --auto-truncate setting
    truncation_direction: str = "right"
    normalize: bool | None = None  # None: the model's own setting
    prompt_name: str | None = None
    priority: Priority | None = None  # None: the X-Priority header's, else interactive
    # Each input's tokens at most (special tokens included), under the model's limit: Cohere's
    # `max_tokens`, checked against the model by its adapter.
    max_tokens: int | None = None
    # Token arrays decoded to text (server.token_arrays): the ids each input arrived as, which the
    # token limits count instead of the model's tokens.
    sent_token_counts: tuple[int, ...] | None = None


def check_api_version(value: str | None) -> str | None:
    if value is not None and not _is_api_version(value):
        raise invalid(
            f"api-version {value!r} is not valid; use 'v1', 'preview', or a date such as "
            "'2024-05-01-preview'",
            param="api-version",
            code="invalid_api_version",
        )
    return value


def _is_api_version(value: str) -> bool:
    match = API_VERSION.fullmatch(value)
    if match is None:
        return False
    if match.group(1) is None:
        return True  # v1 or preview
    try:  # a real calendar day: 2024-13-45 and 2023-02-29 are not versions
        datetime.date(*(int(part) for part in match.group(1, 2, 3)))
    except ValueError:
        return False
    return True


def check_extra_parameters(value: str | None) -> str:
    """The `extra-parameters` header's policy for unknown body fields; `error` when absent."""
    if value is None:
        return "error"
    if value not in EXTRA_PARAMETERS:
        raise invalid(
            f"extra-parameters header {value!r} is not one of {', '.join(EXTRA_PARAMETERS)}",
            param="extra-parameters",
        )
    return value


def parse_embeddings_request(body: bytes, *, extra_parameters: str = "error") -> EmbeddingsRequest:
    """Decode and type-check an embeddings request body.

    `extra_body` keys are merged into the top level (they override it). Fields that are neither
    standard nor embedserve extensions are refused under `extra_parameters="error"` and ignored
    under `drop` or `pass-through` (the model has no other parameters to pass them to).
    """
    raw = decode_object(body)
    extra = raw.pop("extra_body", None)
    if extra is not None:
        if not isinstance(extra, dict):
            raise invalid(
                f"extra_body must be an object, not {kind_of(extra)}",
                param="extra_body",
                code="invalid_type",
            )
        raw.update(extra)
    # Not `fields.refuse_unknown`: OpenAI's own message, word for word, without its known list.
    unknown = [key for key in raw if key not in STANDARD_FIELDS and key not in EXTENSION_FIELDS]
    if unknown and extra_parameters == "error":
        raise invalid(
            f"Unrecognized request argument supplied: {', '.join(unknown)}",
            param=unknown[0],
            code="unknown_parameter",
        )

    if raw.get("input") is None:
        raise invalid(
            "'input' is a required property", param="input", code="missing_required_parameter"
        )
    try:
        inputs = classify_inputs(raw["input"])
    except InputError as exc:
        raise invalid(str(exc), param="input", code="invalid_type") from exc

    # An explicit "" is a mistake, not a request for the default: only null or absent is that.
    encoding_format = optional(raw, "encoding_format", str)
    encoding_format = "float" if encoding_format is None else encoding_format
    if encoding_format not in ENCODING_FORMATS:
        raise invalid(
            f"encoding_format must be one of {', '.join(ENCODING_FORMATS)}, "
            f"got {encoding_format!r}",
            param="encoding_format",
        )
    input_type = optional(raw, "input_type", str)
    if input_type is not None and input_type not in INPUT_TYPES:
        raise invalid(
            f"input_type must be one of {', '.join(INPUT_TYPES)}, got {input_type!r}",
            param="input_type",
        )
    direction = optional(raw, "truncation_direction", str)
    direction = "right" if direction is None else direction
    if direction not in DIRECTIONS:
        raise invalid(
            f"truncation_direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}",
            param="truncation_direction",
        )
    metadata = optional(raw, "metadata", dict)
    if metadata is not None:
        bad = next((k for k, v in metadata.items() if not isinstance(v, str)), None)
        if bad is not None:
            raise invalid(
                f"metadata[{bad!r}] must be a string, not {kind_of(metadata[bad])}",
                param="metadata",
                code="invalid_type",
            )

    return EmbeddingsRequest(
        inputs=inputs,
        model=optional(raw, "model", str),
        encoding_format=encoding_format,
        dimensions=optional(raw, "dimensions", int),
        user=optional(raw, "user", str),
        metadata=metadata,
        input_type=input_type,
        truncate=optional(raw, "truncate", bool),
        truncation_direction=direction,
        priority=priority_field(raw),
        normalize=optional(raw, "normalize", bool),
        prompt_name=optional(raw, "prompt_name", str),
    )
