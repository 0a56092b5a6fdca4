"""Settings are declared once (a `ServerConfig`/`Limits`/`HttpLimits` field, the model-loading
ones a `LoadSettings` field): the flag and the environment variable come from the field, on
`serve` and on every other command that takes them, and the docs' flag table (docs/server.md)
must list each one with its default."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import pytest
from embedserve.cli import PULL_SETTINGS, _parser
from embedserve.loading import LoadSettings
from embedserve.server.cli import config_from_args
from embedserve.server.config import declared_settings
from embedserve.settings import env_name, flag_name, settings_of

FLAGS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "server.md"


def parse(*argv: str, env: dict[str, str] | None = None):
    return config_from_args(_parser().parse_args(["serve", *argv]), env or {})


def value_of(config, owner: str, name: str):
    return getattr(getattr(config, owner) if owner else config, name)


@pytest.mark.parametrize(
    ("owner", "spec"), declared_settings(), ids=lambda x: getattr(x, "name", x)
)
def test_each_setting_has_a_flag_an_env_var_and_a_docs_row(owner, spec):
    rows = [
        line
        for line in FLAGS_PAGE.read_text().splitlines()
        if line.startswith(f"| `{flag_name(spec)}")
    ]
    assert rows, f"docs/server.md has no row for {flag_name(spec)}"
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


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    (commands,) = (a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(commands.choices)


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: a for a in parser._actions for option in a.option_strings}


@pytest.mark.parametrize(
    ("command", "names"),
    [
        ("embed", None),
        ("bench", None),
        ("embed-file", None),
        ("pull", PULL_SETTINGS),
    ],
)
def test_every_command_takes_the_load_settings_serve_declares(command, names):
    """One declaration per flag: `serve`'s --precision, --providers, ... are the same arguments
    (help, choices, type) on every command that loads a model."""
    serve, other = _flags(_subcommands()["serve"]), _flags(_subcommands()[command])
    specs = settings_of(LoadSettings, names)
    assert {flag_name(s) for s in specs} <= set(serve)
    for spec in specs:
        mine, servers = other[flag_name(spec)], serve[flag_name(spec)]
        assert (mine.help, mine.choices, mine.type, mine.dest) == (
            servers.help,
            servers.choices,
            servers.type,
            servers.dest,
        )
    # Flags a command declares by hand must not shadow a load setting under another help.
    load_flags = {flag_name(s) for s in settings_of(LoadSettings)}
    assert load_flags & set(other) == {flag_name(s) for s in specs}


def test_pull_prepares_the_int8_graph_of_each_tokenizer_mode(monkeypatch):
    """The int8 graph is calibrated on the ids the tokenizer gives, so its cache key holds the
    tokenizer mode: pull without --tokenizer-mode could not prepare what `serve --tokenizer-mode
    as-saved --precision int8` loads (and ignored EMBEDSERVE_TOKENIZER_MODE)."""
    from embedserve.cli import load_options

    flag = _parser().parse_args(["pull", "--precision", "int8", "--tokenizer-mode", "as-saved"])
    assert load_options(flag, PULL_SETTINGS).tokenizer_mode == "as-saved"
    monkeypatch.setenv("EMBEDSERVE_TOKENIZER_MODE", "as-saved")
    from_env = _parser().parse_args(["pull", "--precision", "int8"])
    assert load_options(from_env, PULL_SETTINGS).tokenizer_mode == "as-saved"


def test_load_settings_read_the_environment_on_every_command(monkeypatch):
    from embedserve.cli import load_options
    from embedserve.corpus.cli import options_from_args

    monkeypatch.setenv("EMBEDSERVE_PRECISION", "INT8")
    monkeypatch.setenv("EMBEDSERVE_PROVIDERS", "cpu")
    embed = load_options(_parser().parse_args(["embed", "--intra-op-threads", "3"]))
    assert (embed.precision, embed.providers, embed.intra_op_threads) == ("int8", "cpu", 3)
    # Older flag names stay: --threads is --intra-op-threads on bench and embed-file.
    bench = load_options(_parser().parse_args(["bench", "--threads", "2", "--precision", "fp32"]))
    assert (bench.intra_op_threads, bench.precision) == (2, "fp32")
    corpus = options_from_args(_parser().parse_args(["embed-file", "in.jsonl", "--out", "o"]))
    assert (corpus.load.precision, corpus.load.providers) == ("int8", "cpu")
    monkeypatch.delenv("EMBEDSERVE_PRECISION")
    corpus = options_from_args(_parser().parse_args(["embed-file", "in.jsonl", "--out", "o"]))
    assert corpus.load.precision == "fp32"  # pinned for a corpus run, on a GPU too
    assert parse(env={"EMBEDSERVE_PRECISION": "Int8"}).precision == "int8"


def test_every_serve_flag_is_in_the_docs_table():
    """The other direction: each option string `serve --help` shows (both spellings of an on/off
    flag, and the flags that are not settings: --host, --port, ...) is named in a row of the
    table, so a user reading it finds every flag the server takes."""
    rows = [line for line in FLAGS_PAGE.read_text().splitlines() if line.startswith("| `--")]
    named = {flag for row in rows for flag in re.findall(r"`(--[a-z0-9-]+)", row.split(" | ")[0])}
    shown = set(_flags(_subcommands()["serve"])) - {"-h", "--help"}
    assert shown - named == set()


@pytest.mark.parametrize("command", ["serve", "embed", "bench", "embed-file"])
def test_more_model_threads_than_the_cpus_can_take_is_refused_by_flag_and_variable(
    command, monkeypatch, capsys
):
    """--intra-op-threads 100000 started 100,000 spinning ONNX Runtime threads and never answered
    (256 on 2 CPUs: 20 s for one text); now the flag and its variable name the most."""
    from embedserve.cli import load_options
    from embedserve.cpu import max_model_threads

    most = max_model_threads()
    positional = ["in.jsonl", "--out", "o"] if command == "embed-file" else []
    with pytest.raises(SystemExit):
        _parser().parse_args([command, *positional, "--intra-op-threads", str(most + 1)])
    refused = capsys.readouterr().err  # bench also takes the older --threads
    assert re.search(rf"argument --intra-op-threads(/--threads)?: must be at most {most} ", refused)
    monkeypatch.setenv("EMBEDSERVE_INTRA_OP_THREADS", "100000")
    args = _parser().parse_args([command, *positional])
    with pytest.raises(
        ValueError, match=f"EMBEDSERVE_INTRA_OP_THREADS='100000': must be at most {most}"
    ):
        config_from_args(
            args, {"EMBEDSERVE_INTRA_OP_THREADS": "100000"}
        ) if command == "serve" else load_options(args)
    monkeypatch.setenv("EMBEDSERVE_INTRA_OP_THREADS", str(most))
    if command != "serve":
        assert load_options(_parser().parse_args([command, *positional])).intra_op_threads == most


@pytest.mark.parametrize("command", ["serve", "embed", "embed-file"])
def test_a_batch_budget_past_the_most_that_is_useful_is_refused_by_flag_and_variable(
    command, monkeypatch, capsys
):
    """--max-batch-tokens 1000000000 was taken (one 1,500-text batch reached 7.8 GB resident),
    and 0 or -5 passed the flag to fail later as `max_batch_tokens`: the flag names itself."""
    from embedserve.cli import load_options

    positional = ["in.jsonl", "--out", "o"] if command == "embed-file" else []
    for bad, says in [("1000000000", "must be at most 262144 "), ("0", "must be at least 1")]:
        with pytest.raises(SystemExit):
            _parser().parse_args([command, *positional, "--max-batch-tokens", bad])
        assert f"argument --max-batch-tokens: {says}" in capsys.readouterr().err
    env = {"EMBEDSERVE_MAX_BATCH_TOKENS": "1000000000"}
    monkeypatch.setenv(*env.popitem())
    args = _parser().parse_args([command, *positional])
    with pytest.raises(ValueError, match="EMBEDSERVE_MAX_BATCH_TOKENS='1000000000': must be at"):
        config_from_args(args, dict(os.environ)) if command == "serve" else load_options(args)
    assert parse("--max-batch-tokens", "262144").max_batch_tokens == 262_144


def test_an_idle_spin_onnx_runtime_would_ignore_is_refused_by_flag_and_variable(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["embed", "--idle-spin-us", "2147483648"])
    assert "argument --idle-spin-us: must be at most 2147483647" in capsys.readouterr().err
    with pytest.raises(ValueError, match="EMBEDSERVE_IDLE_SPIN_US='3000000000': must be at most"):
        parse(env={"EMBEDSERVE_IDLE_SPIN_US": "3000000000"})
    assert parse(env={"EMBEDSERVE_IDLE_SPIN_US": "2147483647"}).idle_spin_us == 2**31 - 1
