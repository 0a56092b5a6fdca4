"""Real servers on loopback ports for the HTTP tests, sharing one engine per test session."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from embedserve.engine import Engine
from embedserve.server.app import create_app
from embedserve.server.config import ServerConfig

MODEL = "all-MiniLM-L6-v2"
KEY = "sk-test-key"
FP32_COSINE = 0.99999


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

    def start(self, *, wait_ready: bool = True, timeout: float = 60.0) -> LiveServer:
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
    server = LiveServer(create_app(config, engines=engines)).start(wait_ready=wait_ready)
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
    with live_server(ServerConfig(api_keys=(KEY,)), engines={MODEL: engine}) as live:
        yield live


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


def metric_samples(text: str, name: str) -> dict[str, float]:
    """Prometheus text → {'name{labels}': value} for samples of metric `name`."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out
