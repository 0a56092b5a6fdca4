"""`embedserve serve`: flags to config, and the real command in a subprocess with two workers."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from embedserve.cli import _parser
from embedserve.server.cli import config_from_args
from embedserve.server.config import Limits, ModelSpec, ServerConfig, keys_from_env

from tests.support import free_port, stop, wait_ready

from .conftest import MODEL


def parse(*argv: str, env: dict[str, str] | None = None) -> ServerConfig:
    return config_from_args(_parser().parse_args(["serve", *argv]), env or {})


def test_defaults():
    config = parse()
    assert config.models == (ModelSpec(MODEL),)
    assert config.api_keys == ()
    assert config.auto_truncate is True and config.allow_dimensions is False
    assert config.compile is False
    assert config.limits == Limits()
    assert (
        config.limits.max_inputs,
        config.limits.max_input_tokens,
        config.limits.max_request_tokens,
    ) == (2048, 8192, 300_000)


def test_every_flag():
    config = parse(
        "--model",
        MODEL,
        "--model",
        "/models/e5=e5",
        "--api-key",
        "a",
        "--api-key",
        "b",
        "--no-auto-truncate",
        "--allow-dimensions",
        "--max-batch-tokens",
        "4096",
        "--max-batch-requests",
        "8",
        "--max-queue",
        "100",
        "--max-inputs",
        "10",
        "--max-input-tokens",
        "512",
        "--max-request-tokens",
        "1000",
        "--max-body-bytes",
        "5000",
        "--providers",
        "cpu",
        "--intra-op-threads",
        "2",
        "--compile",
        env={"EMBEDSERVE_API_KEYS": "c, a,,"},
    )
    assert config.models == (ModelSpec(MODEL), ModelSpec("/models/e5", "e5"))
    assert config.api_keys == ("a", "b", "c")
    assert config.auto_truncate is False and config.allow_dimensions is True
    assert (config.max_batch_tokens, config.max_batch_requests, config.max_queue) == (4096, 8, 100)
    assert config.limits == Limits(
        max_inputs=10, max_input_tokens=512, max_request_tokens=1000, max_body_bytes=5000
    )
    assert (config.providers, config.intra_op_threads, config.compile) == ("cpu", 2, True)
    assert ServerConfig.from_json(config.to_json()) == config  # what worker processes receive


@pytest.mark.parametrize("argv", [["--max-queue", "0"], ["--workers", "-1"], ["--port", "x"]])
def test_bad_flags_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 2


def test_more_workers_than_the_cpus_can_take_is_refused(capsys):
    """--workers 99999999999999999999 was taken: the command forked workers, each loading the
    model, until the machine's 23 GB were spent, and SIGTERM did not stop it."""
    from embedserve.cpu import max_model_threads

    most = max_model_threads()
    with pytest.raises(SystemExit) as info:
        parse("--workers", str(most + 1))
    assert info.value.code == 2
    assert f"argument --workers: must be at most {most} " in capsys.readouterr().err
    assert _parser().parse_args(["serve", "--workers", str(most)]).workers == most


def test_model_specs():
    assert ModelSpec.parse("BAAI/bge-small-en-v1.5").id == "BAAI/bge-small-en-v1.5"
    assert ModelSpec.parse("BAAI/bge-small-en-v1.5=bge").id == "bge"
    assert ModelSpec.parse("/a=b/c=alias") == ModelSpec("/a=b/c", "alias")
    assert "sentence-transformers/all-MiniLM-L6-v2" in ModelSpec(MODEL).names
    with pytest.raises(ValueError):
        ModelSpec.parse("=alias")


def test_the_model_variable_names_the_model_when_no_flag_does():
    """What the Docker images' MODEL build argument sets, so the image serves what it pulled."""
    assert parse(env={"EMBEDSERVE_MODEL": "BAAI/bge-small-en-v1.5=bge"}).models == (
        ModelSpec("BAAI/bge-small-en-v1.5", "bge"),
    )
    assert parse("--model", MODEL, env={"EMBEDSERVE_MODEL": "other"}).models == (ModelSpec(MODEL),)


def test_keys_from_env():
    assert keys_from_env({"EMBEDSERVE_API_KEYS": " k1 ,k2,, "}) == ("k1", "k2")
    assert keys_from_env({}) == ()


def test_batch_keys_from_flags_environment_and_files(tmp_path: Path):
    """Batch keys come in the same three shapes as plain keys, each kind from its own sources."""
    (tmp_path / "batch.keys").write_text("# the corpus jobs\nb3\n\n  b1 \n")
    (tmp_path / "plain.keys").write_text("p2\n")
    config = parse(
        "--api-key",
        "p1",
        "--batch-api-key",
        "b1",
        "--batch-api-key-file",
        str(tmp_path / "batch.keys"),
        env={
            "EMBEDSERVE_BATCH_API_KEYS": " b2,b1,",
            "EMBEDSERVE_API_KEY_FILE": str(tmp_path / "plain.keys"),
        },
    )
    assert config.api_keys == ("p1", "p2")
    assert config.batch_api_keys == ("b1", "b2", "b3")
    assert ServerConfig.from_json(config.to_json()) == config  # what worker processes receive
    from_env_file = parse(env={"EMBEDSERVE_BATCH_API_KEY_FILE": str(tmp_path / "batch.keys")})
    assert (from_env_file.api_keys, from_env_file.batch_api_keys) == ((), ("b3", "b1"))
    assert keys_from_env({"EMBEDSERVE_BATCH_API_KEYS": "k"}, "EMBEDSERVE_BATCH_API_KEYS") == ("k",)


@pytest.mark.parametrize("flag", ["--api-key-file", "--batch-api-key-file"])
def test_a_key_file_that_names_no_key_is_refused_not_served_open(flag, tmp_path, capsys):
    """`--api-key-file ""` (a shell's unset $KEYS) and a file of no key (empty, or comments
    only) started the server open to anyone, with no word; a missing file said only
    "[Errno 2] No such file or directory: 'nope'". Each names the flag or variable now."""
    with pytest.raises(SystemExit):
        parse(flag, "")
    assert f"argument {flag}: must not be blank" in capsys.readouterr().err
    variable = "EMBEDSERVE_" + flag[2:].upper().replace("-", "_")
    (tmp_path / "none.keys").write_text("# no key yet\n\n")
    for source in ([flag, str(tmp_path / "none.keys")], [flag, str(tmp_path / "nope")]):
        with pytest.raises(ValueError, match=f"^{flag} {re.escape(source[1])}: "):
            parse(*source)
    with pytest.raises(ValueError, match=f"^{variable}=.*none.keys': names no key"):
        parse(env={variable: str(tmp_path / "none.keys")})


def test_a_key_listed_both_as_plain_and_as_batch_is_refused_at_startup(tmp_path: Path):
    with pytest.raises(ValueError, match="1 key\\(s\\) are listed both as API keys") as info:
        parse("--api-key", "shared-secret", env={"EMBEDSERVE_BATCH_API_KEYS": "shared-secret"})
    assert "shared-secret" not in str(info.value)  # a key never lands in a log
    # The real command stops before loading anything, with the message and no key.
    (tmp_path / "batch.keys").write_text("shared-secret\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "embedserve.cli",
            "serve",
            "--port",
            str(free_port()),
            "--api-key-file",
            str(tmp_path / "batch.keys"),
            "--batch-api-key-file",
            str(tmp_path / "batch.keys"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "embedserve: error: 1 key(s) are listed both as API keys" in done.stderr
    assert "shared-secret" not in done.stderr + done.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # The socket layer took 83836 modulo 65536 (listening on 18300 while logging 83836).
        (["--port", "83836"], "argument --port: must be from 0 to 65535, got 83836"),
        (["--port", "-1"], "argument --port: must be from 0 to 65535, got -1"),
        # A blank key passed, and no request could present it: a server locked to everyone.
        (["--api-key", ""], "argument --api-key: must not be blank"),
        (["--batch-api-key", " "], "argument --batch-api-key: must not be blank"),
    ],
)
def test_serve_refuses_a_bad_flag_before_starting(argv, message, capsys):
    # Parsed only: the flag is refused there, and a command that wrongly took it would serve.
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(["serve", *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_serve_command_with_two_workers(engine, tmp_path: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "EMBEDSERVE_API_KEYS": "env-key"}
    log = (tmp_path / "server.log").open("w+")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "embedserve.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model",
            f"{MODEL}=mini",
            "--api-key",
            "flag-key",
            "--workers",
            "2",
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        # Both workers must be ready; any of them may answer a given request.
        wait_ready(process, url, Path(log.name), in_a_row=8)
        expected = engine.embed(["from the command line"]).embeddings
        for key, name in [("flag-key", "mini"), ("env-key", MODEL)]:
            response = httpx.post(
                url + "/v1/embeddings",
                headers={"Authorization": f"Bearer {key}"},
                json={
                    "model": name,
                    "input": ["from the command line"],
                    "encoding_format": "float",
                },
            )
            assert response.status_code == 200, response.text
            assert response.json()["model"] == "mini"
            np.testing.assert_allclose(
                np.asarray([response.json()["data"][0]["embedding"]]), expected, atol=1e-6
            )
        assert (
            httpx.post(url + "/v1/embeddings", json={"model": "mini", "input": "x"}).status_code
            == 401
        )
    finally:
        stop(process)
        log.close()


def test_serve_fails_fast_for_an_unknown_model(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "embedserve.cli",
            "serve",
            "--model",
            str(tmp_path / "missing"),
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "embedserve: error:" in result.stderr and "missing" in result.stderr


def test_a_worker_that_cannot_start_stops_serve_with_status_3(tmp_path: Path):
    """With --workers 2, a worker that could not start exited 1 when the app factory raised
    (uvicorn takes only a TypeError from a factory as a failed start), and the supervisor started
    another in its place, forever; and when a worker did fail to start as uvicorn counts it, the
    supervisor stopped and `serve` exited 0. Here a worker is killed after the tiktoken rank
    file, checked by `serve` before the workers started, was damaged: the worker started in its
    place cannot build its app. One restart, then `serve` exits 3, as with one worker."""
    from embedserve.models.cache import cache_root

    # A cache of our own for the rank file to damage; the models and graphs are the shared ones.
    cache = tmp_path / "cache"
    (cache / "tiktoken").mkdir(parents=True)
    for name in ("models", "compiled"):
        (cache / name).symlink_to(cache_root() / name)
    rank_file = cache / "tiktoken" / "cl100k_base.tiktoken"
    rank_file.write_bytes((cache_root() / "tiktoken" / rank_file.name).read_bytes())
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                *[sys.executable, "-m", "embedserve.cli", "serve", "--model", MODEL],
                *["--port", str(free_port()), "--workers", "2", "--log-level", "info"],
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "EMBEDSERVE_CACHE": str(cache)},
            start_new_session=True,  # its own group: the workers are killed with it at the end
        )
    try:
        wait_for_log(process, log_path, lambda text: text.count("startup complete") == 2)
        worker = int(re.findall(r"Started server process \[(\d+)\]", log_path.read_text())[0])
        rank_file.write_bytes(b"cut short")
        os.kill(worker, signal.SIGKILL)  # the supervisor starts another in its place
        # Exited, or a second worker died: a restart loop (stopped here, not left to spin).
        wait_for_log(process, log_path, lambda text: text.count("died") > 1, exited=True)
        assert process.poll() == 3, log_path.read_text()
        assert "failed to start, stopping the parent process" in log_path.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):  # none of the group left
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_for_log(process, log_path: Path, seen, *, exited: bool = False, timeout: float = 120):
    """Until `seen(log text)`, or (if `exited`) the process has exited; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not seen(log_path.read_text()):
        if process.poll() is not None:
            assert exited, log_path.read_text()
            return
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.1)
