"""Settings declared once: a dataclass field made with `setting()` is a command-line flag
(`--field-name`), an environment variable (`EMBEDSERVE_FIELD_NAME`) and a row in docs/server.md (checked by
tests/reliability/test_settings.py). `serve` takes every declared setting; the other commands take
the model-loading ones (`loading.LoadSettings`) through the same two functions here.

Light on purpose: the CLI builds its parser from these before any model code is imported.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import Field, field, fields
from typing import Any

ENV_PREFIX = "EMBEDSERVE_"


def setting(
    default: Any,
    help: str,
    *,
    type: Callable[[str], Any] | None = None,
    choices: tuple[str, ...] | None = None,
    metavar: str = "N",
) -> Any:
    """A setting, declared once: a flag (`--field-name`) and an environment variable
    (`EMBEDSERVE_FIELD_NAME`) on each command that takes it, and a row in docs/server.md's flag table."""
    meta = {"help": help, "type": type, "choices": choices, "metavar": metavar}
    return field(default=default, metadata=meta)


def settings_of(kind: type, names: Sequence[str] | None = None) -> list[Field[Any]]:
    """The declared settings of a dataclass (its fields made with `setting()`), or those `names`."""
    declared = [f for f in fields(kind) if "help" in f.metadata]
    if names is None:
        return declared
    by_name = {f.name: f for f in declared}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"{kind.__name__} declares no setting {unknown}")
    return [by_name[n] for n in names]


def flag_name(spec: Field[Any]) -> str:
    return "--" + spec.name.replace("_", "-")


def env_name(spec: Field[Any]) -> str:
    return ENV_PREFIX + spec.name.upper()


def add_settings(
    parser: argparse.ArgumentParser,
    kind: type,
    names: Sequence[str] | None = None,
    *,
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """`kind`'s declared settings (or those `names`) as flags; `aliases` adds older flag names
    for a setting (`{"intra_op_threads": ["--threads"]}`)."""
    for spec in settings_of(kind, names):
        add_setting(parser, spec, aliases=(aliases or {}).get(spec.name, ()))


def settings_from_args(
    args: argparse.Namespace,
    kind: type,
    names: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The values of the settings `add_settings` added: flag, else environment, else default."""
    return {spec.name: setting_value(args, spec, environ) for spec in settings_of(kind, names)}


def add_setting(
    parser: argparse.ArgumentParser,
    spec: Field[Any],
    *,
    owner: str = "",
    aliases: Sequence[str] = (),
) -> None:
    """One declared setting as a flag; its default is the field's, unless the env var is set
    (read at parse time, in `setting_value`, so tests can pass their own environment)."""
    meta = spec.metadata
    default = spec.default
    shown = "on" if default is True else "off" if default is False else default
    help_text = (meta["help"] + ("" if default is None else f" (default: {shown})")).replace(
        "%", "%%"
    )
    names = [flag_name(spec), *aliases]
    dest = _dest(owner, spec)
    if isinstance(default, bool):
        parser.add_argument(
            *names, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_text
        )
        return
    parser.add_argument(
        *names,
        dest=dest,
        type=_setting_type(spec),
        choices=meta["choices"],
        metavar=meta["metavar"] if meta["choices"] is None else None,
        default=None,
        help=help_text,
    )


def setting_value(
    args: argparse.Namespace,
    spec: Field[Any],
    environ: Mapping[str, str] | None = None,
    *,
    owner: str = "",
) -> Any:
    """The flag if given, else the environment variable, else the field's default."""
    environ = os.environ if environ is None else environ
    value = getattr(args, _dest(owner, spec))
    if value is not None:
        return value
    text = environ.get(env_name(spec))
    if text is None or text == "":
        return spec.default
    if isinstance(spec.default, bool):
        if text.lower() not in _BOOLEANS:
            raise ValueError(f"{env_name(spec)}={text!r}: expected true or false")
        return _BOOLEANS[text.lower()]
    try:
        value = _setting_type(spec)(text)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise ValueError(f"{env_name(spec)}={text!r}: {exc}") from exc
    choices = spec.metadata["choices"]
    if choices is not None and value not in choices:
        raise ValueError(f"{env_name(spec)}={text!r}: expected one of {', '.join(choices)}")
    return value


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def at_most(value: int, most: int, why: str) -> int:
    """`value` if it is at most `most`, else an ArgumentTypeError saying the most and `why`
    (a flag's error, or a setting's with its variable named by `setting_value`)."""
    if value > most:
        raise argparse.ArgumentTypeError(f"must be at most {most} ({why}), got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _dest(owner: str, spec: Field[Any]) -> str:
    return f"{owner}.{spec.name}" if owner else spec.name


def _setting_type(spec: Field[Any]) -> Callable[[str], Any]:
    kind = spec.metadata["type"] or type(spec.default)
    if kind is int:
        return positive
    if kind is float:
        return positive_float
    return kind


_BOOLEANS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}
