"""Hand-parsed JSON bodies, field by field: the object itself, a type-checked optional field, and
how a wrong value is named in the error; TEI's spellings of a truncation direction. Shared by
the OpenAI (`schemas`), rerank (`adapters.rerank_schemas`) and TEI-dialect parsers, so every body
gets the same messages and codes."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from embedserve.admission import Priority
from embedserve.server.errors import invalid

_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean", dict: "an object"}

# TEI's spellings of a truncation direction: its clients send its enum's "Left" / "Right".
TeiDirection = Literal["Left", "Right", "left", "right"]


def tei_direction(value: str | None) -> str:
    """A TEI `truncation_direction` as the engine's "left" / "right" ("right" when absent)."""
    return "right" if value is None else value.lower()


def decode_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object. A key given twice keeps its last value, as in Python's `json`,
    JavaScript's `JSON.parse` and OpenAI's own API; refusing duplicates would need a second,
    slower parse of every body for a mistake no SDK makes."""
    try:
        raw = msgspec.json.decode(body)
    # RecursionError: absurdly deep nesting. UnicodeDecodeError: msgspec decodes strings lazily
    # and reports bytes that are not UTF-8 this way, not as a MsgspecError.
    except (msgspec.MsgspecError, RecursionError, UnicodeDecodeError) as exc:
        raise invalid(
            f"We could not parse the JSON body of your request ({exc}). "
            "The body must be a JSON object, in UTF-8.",
            code="invalid_json",
        ) from exc
    if not isinstance(raw, dict):
        raise invalid(
            f"The request body must be a JSON object, not {kind_of(raw)}", code="invalid_json"
        )
    return raw


def optional(raw: dict[str, Any], name: str, kind: type) -> Any:
    """raw[name] when it is of `kind` (bool is not an int here), None when absent or null."""
    value = raw.get(name)
    if value is None:
        return None
    wrong = not isinstance(value, kind) or (kind is int and isinstance(value, bool))
    if wrong:
        raise invalid(
            f"{name} must be {_TYPE_NAMES[kind]}, not {kind_of(value)}",
            param=name,
            code="invalid_type",
        )
    return value


def refuse_unknown(raw: dict[str, Any], known: frozenset[str]) -> None:
    """A 400 naming the first field of `raw` that is not in `known`, and listing those that are."""
    unknown = [key for key in raw if key not in known]
    if unknown:
        raise invalid(
            f"Unrecognized request argument supplied: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})",
            param=unknown[0],
            code="unknown_parameter",
        )


def kind_of(value: object) -> str:
    """A JSON value's type as an error message names it: `an array`, `null`..."""
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def parse_priority(value: str | None, param: str) -> Priority | None:
    """A priority as sent (a header's or a body field's value; None when absent): a 400 naming
    `param` when it is not one of the priorities."""
    try:
        return Priority.parse(value)
    except ValueError as exc:
        raise invalid(str(exc), param=param) from exc


def priority_field(raw: dict[str, Any]) -> Priority | None:
    """The body's optional `priority` field (embedserve's extension, where a format allows one)."""
    return parse_priority(optional(raw, "priority", str), "priority")
