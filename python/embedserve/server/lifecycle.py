"""Graceful shutdown: a drain that starts at SIGTERM/SIGINT and lasts at most `drain_seconds`.

uvicorn, left alone, closes its listening socket at the signal, tells the app nothing until every
connection has closed, and after its graceful timeout cancels the handlers still running, which
answers them with a plain-text 500. So at startup the app chains its own step in front of the
signal handlers uvicorn installed (uvicorn restores the originals when it stops), and hands the
signal on to uvicorn only when the drain is over:

- at the signal: `/ready` answers 503 `shutting_down`, so a load balancer stops sending, and new
  embedding requests get 503 `shutting_down` with `Retry-After` (connections are still
  accepted and answered, so none is left hanging, with one worker or several);
- requests already admitted keep going; when none is left, or `drain_seconds` have passed, every
  model's batcher stops (what still waits gets the 503 `shutting_down` JSON), and the signal
  goes on to uvicorn, which closes the connections; the process exits 0.

A second signal during the drain goes straight to uvicorn (a second Ctrl-C quits at once). This
works in each `--workers` process, as each one runs uvicorn's server in its main thread; there a
SIGTERM after a SIGINT is no second signal, but the supervisor passing on the Ctrl-C that the
worker, in the same process group, had already.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# uvicorn's graceful timeout, counted from the end of the drain (when it gets the signal):
# time for the connections to close after their last answer.
GRACE_SECONDS = 5.0
# After the drain: time for the 503s and the last batch's answers to be written before uvicorn
# closes up.
LAST_ANSWERS_SECONDS = GRACE_SECONDS / 2
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def shutdown_seconds(drain_seconds: float) -> float:
    """The longest a server takes from SIGTERM to exit: the drain, the last answers (`Drain._run`),
    then uvicorn's graceful shutdown. A supervisor's kill timeout (Kubernetes'
    terminationGracePeriodSeconds) must be longer."""
    return drain_seconds + LAST_ANSWERS_SECONDS + GRACE_SECONDS


class Drain:
    """One app's drain. `begin` may be called from any thread (a signal handler's, too)."""

    def __init__(self, seconds: float, stop: Callable[[], None], busy: Callable[[], bool]) -> None:
        self.seconds = seconds
        self._stop = stop  # fail what still waits
        self._busy = busy  # whether admitted requests are still in flight
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finish: Callable[[], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._began_with: int | None = None  # the signal that began the drain
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
        # uvicorn's handler is its server's bound `handle_exit`, which records the signal and
        # raises it again once the server has stopped, so the process would die of it (exit
        # status -15). After a drain the shutdown is an orderly one: ask the server to stop
        # through its public `should_exit` instead, and the process exits 0.
        server = getattr(previous, "__self__", None)

        def stop_server() -> None:
            if server is not None and hasattr(server, "should_exit"):
                server.should_exit = True
            else:
                previous(signal.SIGTERM, None)

        def handle(sig: int, frame: Any) -> None:
            if self._loop is None or self._loop.is_closed():
                previous(sig, frame)
            elif not self.draining:
                self._began_with = sig
                self.begin(stop_server)
            elif sig == signal.SIGTERM and self._began_with == signal.SIGINT:
                # Ctrl-C reaches every process in the terminal's group; with --workers the
                # supervisor, which had it too, passes it on as SIGTERM: the same stop, whose
                # drain goes on (taken as a second signal, it cut the drain to GRACE_SECONDS).
                log.info("SIGTERM from the supervisor after SIGINT: the drain goes on")
            else:
                previous(sig, frame)  # a second signal: uvicorn's own way, at once

        return handle

    def begin(self, finish: Callable[[], None] | None = None) -> None:
        """Start draining; `finish` runs on the loop when the drain is over."""
        if self.draining:
            return
        self.draining = True  # read by /ready and admission; a plain attribute write is atomic
        self._finish = finish
        log.info("draining: finishing admitted work for up to %gs", self.seconds)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        while self._busy() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self._busy():
            log.warning("drain time is over: the requests still waiting get 503 shutting_down")
        self._stop()
        while self._busy() and loop.time() < deadline + LAST_ANSWERS_SECONDS:
            await asyncio.sleep(0.05)
        log.info("drained")
        if self._finish is not None:
            self._finish()
