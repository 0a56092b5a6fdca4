"""A real engine the test holds at the model's door, and a call run on a background thread."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from embedserve.server.pipeline import INLINE_MODEL_TOKENS
from embedserve.vector_cache import VectorCache

# A text too long for the idle model's fast path (`Batcher.run_inline` on the event loop's
# thread): a request the test holds at the gate must wait on the batcher's thread, not the loop's.
HELD = "held " * INLINE_MODEL_TOKENS


class GatedEngine:
    """The real engine; forward() waits for `gate`, and every call is recorded."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        # Its own, empty cache: every input reaches the model and its queue, repeats too.
        self.cache = VectorCache(0)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.forwards: list[list[list[int]]] = []
        self.prepares = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    @property
    def batches(self) -> list[int]:
        """The size of each batch the model ran."""
        return [len(forward) for forward in self.forwards]

    def prepare(self, *args: Any, **kwargs: Any) -> Any:
        self.prepares += 1
        return self._engine.prepare(*args, **kwargs)

    def forward(self, sequences: Any) -> Any:
        return self.through_gate(self._engine.forward, sequences)

    def through_gate(self, forward: Callable[[Any], Any], sequences: Any) -> Any:
        self.entered.set()
        assert self.gate.wait(120), "test forgot to open the gate"
        self.forwards.append([s.tolist() for s in sequences])
        return forward(sequences)

    def lane_engine(self, mode: str) -> Any:
        """The engine's batch-lane engine, if it has one, held at the same gate and recorded in
        the same list: a server test sees every run whichever session it takes."""
        lane = getattr(self._engine, "lane_engine", lambda _: None)(mode)
        return None if lane is None else GatedLane(self, lane)


class GatedLane:
    """A GatedEngine's lane engine: its runs go through the same gate."""

    def __init__(self, gated: GatedEngine, lane: Any) -> None:
        self._gated = gated
        self._lane = lane

    def forward(self, sequences: Any) -> Any:
        return self._gated.through_gate(self._lane.forward, sequences)


def background(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run `fn` on a thread: its result lands in `out["value"]`, or its error in `out["error"]`."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except Exception as exc:  # noqa: BLE001 - handed to the test thread, which asserts on it
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def set_queued_wait(batcher: Any, seconds: float) -> None:
    """Teach `batcher` a throughput at which the work queued now is `seconds` of waiting, so
    that admission's decisions follow from the test's numbers, never from the machine's speed
    (the model is held: no batch runs to measure)."""
    for _ in range(100):
        batcher.record_throughput(1000, 1.0)
    tokens = batcher.estimated_wait() * 1000
    for _ in range(100):
        batcher.record_throughput(int(tokens / seconds), 1.0)
    assert 0.93 * seconds < batcher.estimated_wait() < 1.07 * seconds


def hold_the_model(
    gated: GatedEngine, send: Callable[[dict[str, Any]], Any], model: str
) -> tuple[threading.Thread, dict[str, Any]]:
    """A first request (`send(body)` posts an OpenAI embeddings body) that is inside the model,
    the gate closed, when this returns: its thread and its `background` result."""
    gated.gate.clear()
    gated.entered.clear()
    held = background(lambda: send({"model": model, "input": HELD}))
    assert gated.entered.wait(30)
    return held


QUEUED_INPUTS = 64


@contextlib.contextmanager
def queued_behind_a_held_run(
    gated: GatedEngine, batcher: Any, send: Callable[[dict[str, Any]], Any], model: str
) -> Iterator[None]:
    """A first request held inside the model, QUEUED_INPUTS interactive inputs waiting behind
    it, and `batcher` taught that they are 1.5 s of work: over batch work's limit (half the
    ceiling) and within interactive work's, at `max_wait_seconds=2`. `send(body)` posts an
    OpenAI embeddings body. On leaving, the gate opens and both requests must be answered 200."""
    held = hold_the_model(gated, send, model)
    texts = [f"queued interactive text number {i} of a long request" for i in range(QUEUED_INPUTS)]
    queued = background(lambda: send({"model": model, "input": texts}))
    _wait_for_inputs(batcher, QUEUED_INPUTS)
    set_queued_wait(batcher, 1.5)
    try:
        yield
    finally:
        gated.gate.set()
        for thread, out in (held, queued):
            thread.join(30)
            assert out["value"].status_code == 200, out


def _wait_for_inputs(batcher: Any, count: int, timeout: float = 30.0) -> None:
    """Until `batcher` has `count` inputs queued."""
    deadline = time.monotonic() + timeout
    while batcher.queued_inputs != count:
        assert time.monotonic() < deadline, f"{batcher.queued_inputs} inputs queued, not {count}"
        time.sleep(0.01)
