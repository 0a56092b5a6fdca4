"""Settings are declared once (a `ServerConfig`/`Limits`/`HttpLimits` field): the flag and the
environment variable come from the field, and the README's flag table must list each one with
its default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from embedserve.cli import _parser
from embedserve.server.cli import config_from_args, env_name, flag_name
from embedserve.server.config import declared_settings

README = Path(__file__).resolve().parents[2] / "README.md"


def parse(*argv: str, env: dict[str, str] | None = None):
    return config_from_args(_parser().parse_args(["serve", *argv]), env or {})


def value_of(config, owner: str, name: str):
    return getattr(getattr(config, owner) if owner else config, name)


@pytest.mark.parametrize(
    ("owner", "spec"), declared_settings(), ids=lambda x: getattr(x, "name", x)
)
def test_each_setting_has_a_flag_an_env_var_and_a_readme_row(owner, spec):
    rows = [
        line for line in README.read_text().splitlines() if line.startswith(f"| `{flag_name(spec)}")
    ]
    assert rows, f"README has no row for {flag_name(spec)}"
    default = spec.default
    if isinstance(default, bool):
        shown = "on" if default else "off"
    elif isinstance(default, float) and default.is_integer():
        shown = f"`{int(default)}`"
    elif default is None:
        shown = None
    else:
        shown = f"`{default}`"
    if shown is not None:
        assert re.search(rf"\| {re.escape(shown)} \|", rows[0]), (rows[0], shown)
    assert value_of(parse(), owner, spec.name) == default

    if isinstance(default, bool):
        flag_value, env_text = (not default), ("false" if default else "true")
        argv = [flag_name(spec) if not default else "--no-" + flag_name(spec)[2:]]
    elif spec.metadata["choices"]:
        flag_value = env_text = spec.metadata["choices"][0]
        argv = [flag_name(spec), env_text]
    elif spec.metadata["type"] is str:
        flag_value = env_text = "cpu"
        argv = [flag_name(spec), env_text]
    else:
        flag_value = 3 if isinstance(default, int) or default is None else 2.5
        env_text = str(flag_value)
        argv = [flag_name(spec), env_text]
    assert value_of(parse(*argv), owner, spec.name) == flag_value
    assert value_of(parse(env={env_name(spec): env_text}), owner, spec.name) == flag_value


def test_a_flag_wins_over_the_environment():
    config = parse("--max-wait-seconds", "2", env={"EMBEDSERVE_MAX_WAIT_SECONDS": "7"})
    assert config.max_wait_seconds == 2.0
    assert parse(env={"EMBEDSERVE_DRAIN_SECONDS": "7"}).drain_seconds == 7.0


def test_a_bad_environment_value_is_a_clear_error():
    with pytest.raises(ValueError, match="EMBEDSERVE_MAX_INPUTS='zero'"):
        parse(env={"EMBEDSERVE_MAX_INPUTS": "zero"})
