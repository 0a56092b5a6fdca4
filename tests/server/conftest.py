"""Real servers on loopback ports for the HTTP tests, sharing one engine per test session."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from embedserve.engine import Engine
from embedserve.server.app import create_app
from embedserve.server.config import ServerConfig

MODEL = "all-MiniLM-L6-v2"
KEY = "sk-test-key"
# Admission for every test server that is not testing admission. A server refuses work that
# would finish more than `max_wait_seconds` from now at the throughput it measures, so the same
# burst of requests is served on a fast machine and gets 429s on a slow one (a 2-core CI machine
# twice as slow as ours refused the 64-client test). These limits refuse nothing a test sends,
# and keep the batching window at WINDOW_BUDGETS budgets whatever the rate. Tests of admission
# set their own limits and set or measure the rate.
UNHURRIED = {"max_wait_seconds": 3600.0, "max_queue": 1_000_000}
# The same, as `embedserve serve` flags (a flag is its setting's name; later flags win).
UNHURRIED_FLAGS = [
    word
    for name, value in UNHURRIED.items()
    for word in (f"--{name.replace('_', '-')}", str(value))
]


def unhurried(**settings: Any) -> ServerConfig:
    """A ServerConfig with UNHURRIED admission; `settings` may override it."""
    return ServerConfig(**{**UNHURRIED, **settings})


def wait_for(condition: Callable[[], object], timeout: float = 60.0) -> None:
    """Poll `condition` until it holds; the timeout only bounds a test that is already failing."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


class RawRequest:
    """A POST sent over a plain socket whose answer is never read: its client leaves exactly
    when the test calls `hang_up`, after it has seen the request reach the state it tests. A
    client timeout instead races the server: a slow machine may not have queued the request yet
    when the client gives up, and a fast one may have answered it."""

    def __init__(
        self, url: str, path: str, body: object, headers: Mapping[str, str] | None = None
    ) -> None:
        address = urlsplit(url)
        payload = json.dumps(body).encode()
        head = {
            "host": address.netloc,
            "content-type": "application/json",
            "content-length": str(len(payload)),
            **(headers or {}),
        }
        lines = [f"POST {path} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items()), "", ""]
        self._sock = socket.create_connection((address.hostname, address.port), timeout=30)
        self._sock.sendall("\r\n".join(lines).encode("latin-1") + payload)

    def hang_up(self) -> None:
        self._sock.close()


class LiveServer:
    """uvicorn serving an app in a background thread on a socket bound to 127.0.0.1."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(256)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            name=f"uvicorn-{self.port}",
            daemon=True,
        )

    @property
    def state(self) -> Any:
        return self.app.state["server"]

    def start(self, *, wait_ready: bool = True, timeout: float = 300.0) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        wanted = "/ready" if wait_ready else "/health"
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + wanted, timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server on {self.url} did not answer {wanted} within {timeout}s")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(15)
        self._sock.close()


@contextmanager
def live_server(
    config: ServerConfig | None = None,
    *,
    engines: Mapping[str, Any] | None = None,
    wait_ready: bool = True,
) -> Iterator[LiveServer]:
    """A server for `config` (default: `unhurried()`)."""
    app = create_app(unhurried() if config is None else config, engines=engines)
    server = LiveServer(app).start(wait_ready=wait_ready)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def engine(minilm_dir) -> Engine:
    return Engine.from_pretrained(minilm_dir, name=MODEL)


@pytest.fixture(scope="module")
def server(engine) -> Iterator[LiveServer]:
    """The default server with one key; one per test module."""
    with live_server(unhurried(api_keys=(KEY,)), engines={MODEL: engine}) as live:
        yield live


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def metric_samples(text: str, name: str) -> dict[str, float]:
    """Prometheus text → {'name{labels}': value} for samples of metric `name`."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out
