"""Real `embedserve serve` processes on loopback ports, and what /proc says about their memory."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from embedserve.engine import Engine

from tests.support import free_port, wait_ready

from ..server.conftest import UNHURRIED_FLAGS, metric_samples

MODEL = "all-MiniLM-L6-v2"


def proc_status_kb(pid: int, field: str) -> int:
    """A `VmHWM`/`VmRSS` line of /proc/PID/status, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class CliServer:
    """`python -m embedserve.cli serve` in a subprocess, its log in a file; admission as
    UNHURRIED unless `flags` say otherwise."""

    def __init__(self, flags: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("w+")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "embedserve.cli",
                "serve",
                "--port",
                str(self.port),
                "--model",
                MODEL,
                *UNHURRIED_FLAGS,  # first: a test's own flags win
                *flags,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            # Its own process group: `signal_group` reaches it as a terminal's Ctrl-C does, and
            # no --workers process outlives the test.
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, timeout: float = 300.0, in_a_row: int = 1) -> CliServer:
        wait_ready(self.process, self.url, self.log_path, timeout=timeout, in_a_row=in_a_row)
        return self

    def hwm_kb(self) -> int:
        return proc_status_kb(self.pid, "VmHWM")

    def rss_kb(self) -> int:
        return proc_status_kb(self.pid, "VmRSS")

    def signal_group(self, sig: int) -> None:
        """`sig` to the server and its workers at once, as a terminal sends Ctrl-C (SIGINT) to
        every process of its foreground group."""
        os.killpg(self.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"server did not exit within {timeout}s:\n{self.log()}") from None
        finally:
            self._log.close()


@contextmanager
def cli_server(
    tmp_path: Path, *flags: str, in_a_row: int = 1, env: dict[str, str] | None = None
) -> Iterator[CliServer]:
    server = CliServer(list(flags), tmp_path / f"server-{time.monotonic_ns()}.log", env)
    try:
        yield server.wait_ready(in_a_row=in_a_row)
    finally:
        server.stop(signal.SIGKILL if server.process.poll() is None else signal.SIGTERM)
        with contextlib.suppress(ProcessLookupError):  # workers a killed supervisor left
            server.signal_group(signal.SIGKILL)


@pytest.fixture(scope="session")
def engine(minilm_dir) -> Engine:
    return Engine.from_pretrained(minilm_dir, name=MODEL)


def embed(url: str, body: object, **kwargs) -> httpx.Response:
    kwargs.setdefault("timeout", 30)
    if isinstance(body, (bytes, str)):
        return httpx.post(
            url + "/v1/embeddings",
            content=body,
            headers={"content-type": "application/json"},
            **kwargs,
        )
    return httpx.post(url + "/v1/embeddings", json=body, **kwargs)


def error_of(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return error


def queued_inputs(url: str) -> float:
    """The server's `embedserve_queue_inputs` (with several workers: the one that answered)."""
    text = httpx.get(url + "/metrics", timeout=30).text
    samples = metric_samples(text, "embedserve_queue_inputs")
    return samples[f'embedserve_queue_inputs{{model="{MODEL}"}}']
