"""Graceful shutdown: a drain that starts at SIGTERM/SIGINT and ends `drain_seconds` later.

uvicorn tells the app nothing until every connection has closed, and after its own graceful
timeout it cancels the handlers still running, which answers them with a plain-text 500. So at
startup the app chains its own step in front of the signal handlers uvicorn installed (uvicorn
restores the originals when it stops), and `embedserve serve` sets uvicorn's timeout a few
seconds past the drain:

- at the signal: `/ready` answers 503 `shutting_down`, so a load balancer stops sending;
  requests already received keep going (uvicorn has stopped accepting connections);
- after `drain_seconds`: every model's batcher stops, so requests still waiting get the 503
  `shutting_down` JSON with `Retry-After`, and the running batch finishes; then uvicorn closes
  the connections and the process exits 0.

This works in each `--workers` process, as each one runs uvicorn's server in its main thread.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# uvicorn's own graceful timeout exceeds the drain by this much: time for the last batch to
# finish and the 503s to be written before uvicorn would cancel anything.
GRACE_SECONDS = 5.0
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Drain:
    """One app's drain. `begin` may be called from any thread (a signal handler's, too)."""

    def __init__(self, seconds: float, stop: Callable[[], None]) -> None:
        self.seconds = seconds
        self._stop = stop
        self._loop: asyncio.AbstractEventLoop | None = None
        self.draining = False

    def attach(self) -> None:
        """At app startup, on the serving loop: begin draining when a shutdown signal comes.

        Signal handlers belong to the main thread; an app served from another thread (tests,
        embedding) has no signals to hook and drains only when `begin` is called.
        """
        self._loop = asyncio.get_running_loop()
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            previous = signal.getsignal(sig)
            if callable(previous):
                signal.signal(sig, self._chained(previous))

    def _chained(self, previous: Callable[[int, Any], Any]) -> Callable[[int, Any], None]:
        def handle(sig: int, frame: Any) -> None:
            self.begin()
            previous(sig, frame)

        return handle

    def begin(self) -> None:
        if self.draining:
            return
        self.draining = True  # read by /ready; a plain attribute write is atomic
        log.info("draining: finishing queued work for up to %gs", self.seconds)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.call_later, self.seconds, self._expire)

    def _expire(self) -> None:
        log.info("drain time is over: the requests still waiting get 503 shutting_down")
        self._stop()
