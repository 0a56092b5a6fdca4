"""Dynamic batching: one queue per model, shared by every request, drained by one worker thread.

Semantics follow TEI's `queue.rs`: requests wait in FIFO order; the padded cost of a batch
(longest sequence × rows) stays under a token budget and the requests in it under a cap; a
request bigger than one batch is split across batches and reassembled; cancelled requests are
dropped before they are batched; a full queue refuses new work at once (the caller answers 429)
rather than letting latency grow without bound.

One departure, for padding: the worker takes a *window* of requests from the head of the queue
(about WINDOW_BUDGETS budgets of real tokens, at least one request) and cuts it into batches
longest first with `planning.batch_rows`, the engine's own rule. A 256-token input then no longer
drags 60 short ones to 256 tokens each. Windows are served in FIFO order, so no
request waits behind one that arrived after it. A window also holds at most a share of
`max_wait_seconds` of work at the measured rate (WINDOW_SHARE_OF_WAIT, at least
MIN_WINDOW_SECONDS): a request's rows are spread over every batch of its window, so it finishes
only when the window does. A longer window pads less (more texts sorted together) but delays
every request in it, so the window follows the latency the operator accepts. With the default
10 s wait a window may hold 2.5 s, so WINDOW_BUDGETS decides (MiniLM, 32 x 32 on 2 cores: padding
1.27x -> 1.09x, throughput +15-25 % against a 0.5 s cap); `--max-wait-seconds 2` keeps 0.5 s
windows and the lower p99 (bench/NOTES.md, "Window length follows the admitted wait").

Admission is by estimated wait (`reserve`), before the request is tokenized: the batcher measures
its throughput in real tokens per second of model time (padding included, so the rate reflects
the mix being served) and asks `admission.AdmissionPolicy` whether a request that would finish
that far from now is admitted: up to `max_wait_seconds`, and up to a target that follows the
service time while a standing queue shows overload. An empty queue takes any request (a request
is never refused for its own size alone).

Two lanes (`Priority`). Interactive requests are windowed first; batch requests only when no
interactive work waits. An interactive arrival parks the rest of a batch window (its rows go
back ahead of the batch queue), so it waits for at most the model run in progress, and while
interactive work was submitted in the last YIELD_SECONDS batch work runs in batches of
1/YIELD_DIVISOR of the budget, so that run is short. Submitted, not run inline (below): an
inline run waits for no batch run, so it leaves the batch runs at full size (`_last_interactive`
against `_interactive_seen`, which counts both and picks the lane session).

A tiny interactive request runs beside a batch-lane run instead (`run_inline`). With a
`lane_forward` (the model on a session of one thread fewer: `Engine.lane_engine`), batch-lane runs
take that session while interactive work was seen in the last YIELD_SECONDS, and so does an
inline run beside one: the interactive run gets a core of its own rather than a share of every
core and of the batch run's threads (bench/NOTES.md, "A session for the batch lane").
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from embedserve.admission import AdmissionPolicy, Priority, Refusal
from embedserve.planning import GPU_MAX_BATCH_TOKENS, batch_rows

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_REQUESTS = 128
DEFAULT_MAX_QUEUE_INPUTS = 16_384
DEFAULT_MAX_WAIT_SECONDS = 10.0
# While interactive work was submitted this recently, batch work runs in batches of
# 1/YIELD_DIVISOR of the budget: an interactive arrival waits for the run in progress.
YIELD_SECONDS = 1.0
YIELD_DIVISOR = 32
# A window holds this many batch budgets of real tokens: sorting a wider window pads less
# (bench/NOTES.md), while windows still keep requests roughly in arrival order.
WINDOW_BUDGETS = 8

Forward = Callable[[list[np.ndarray]], np.ndarray]


class QueueFullError(RuntimeError):
    """The queue holds too much work to take this request now; try again after `retry_after`."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @classmethod
    def inputs(cls, queued: int, wanted: int, limit: int) -> QueueFullError:
        return cls(
            f"The server is busy: {queued} inputs are queued, this request adds {wanted}, "
            f"and the queue holds at most {limit}. Retry after 1s."
        )

    @classmethod
    def refused(cls, refusal: Refusal) -> QueueFullError:
        wait, limit, retry = refusal.wait, refusal.limit, refusal.retry_after
        return cls(
            f"The server is busy: this request would finish in about {wait:.1f}s, and the server "
            f"admits work that finishes within {limit:.3g}s now. Retry after {retry}s.",
            retry,
        )


class BatcherClosedError(RuntimeError):
    """The batcher was shut down before this request was computed."""


@dataclass(frozen=True)
class BatchStats:
    """What one batch was made of, for metrics."""

    inputs: int
    requests: int
    padded_tokens: int
    real_tokens: int
    seconds: float


class _Entry:
    """One request. `unbatched`, `cancelled` are guarded by the batcher's lock; `out`,
    `remaining` and the timestamps belong to the worker thread until the future is settled."""

    def __init__(
        self,
        sequences: Sequence[np.ndarray],
        dimension: int,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[np.ndarray],
        priority: Priority,
        dtype: type = np.float32,
    ) -> None:
        self.sequences = sequences
        self.priority = priority
        self.lengths = [len(s) for s in sequences]
        self.out = np.empty((len(sequences), dimension), dtype=dtype)
        self.loop = loop
        self.future = future
        self.unbatched = len(sequences)  # inputs not yet handed to a batch
        self.unbatched_tokens = sum(self.lengths)
        self.remaining = len(sequences)  # inputs not yet computed
        self.cancelled = False
        self.enqueued = time.perf_counter()
        self.started: float | None = None
        self.finished: float | None = None


class Reservation:
    """Room in the queue taken for a request before it is tokenized, from an estimate of its
    size; `Batcher.submit` replaces the estimate by the real counts, `release` gives it back."""

    def __init__(self, batcher: Batcher, inputs: int, tokens: int, priority: Priority) -> None:
        self._batcher = batcher
        self.inputs = inputs
        self.tokens = tokens
        self.priority = priority
        self.held = True

    def release(self) -> None:
        """Give the room back (idempotent): the request failed or left before it was queued."""
        with self._batcher._cond:
            self._batcher._unreserve(self)


class Ticket:
    """A submitted request: await `result()` for its pooled rows in input order."""

    def __init__(self, batcher: Batcher, entry: _Entry) -> None:
        self._batcher = batcher
        self._entry = entry

    async def result(self) -> np.ndarray:
        return await self._entry.future

    def cancel(self) -> None:
        """Drop this request's inputs that are still queued; rows already running are discarded."""
        self._batcher._drop(self._entry)
        if not self._entry.future.done():
            self._entry.future.cancel()

    @property
    def queue_seconds(self) -> float:
        """From submission to the start of the first batch holding one of its inputs."""
        e = self._entry
        return (e.started if e.started is not None else e.enqueued) - e.enqueued

    @property
    def inference_seconds(self) -> float:
        """From the start of its first batch to the end of its last."""
        e = self._entry
        return e.finished - e.started if e.started is not None and e.finished is not None else 0.0


# A row waiting in the window: (length, entry, input index).
_Row = tuple[int, _Entry, int]


class Batcher:
    """Runs `forward` (one padded batch of id sequences → pooled float32 [n, dimension]) for
    many concurrent requests on one dedicated thread. `dtype=object` carries rows of any size
    (a sparse encoder's vectors, one per row: [n, 1]).

    One thread is enough for a CPU model: ONNX Runtime already spreads one batch over its
    intra-op threads, and a second batch in parallel would only compete for the same cores.
    `submit` and `Ticket.cancel` must be called on the event loop that awaits the result.
    """

    def __init__(
        self,
        forward: Forward,
        dimension: int,
        *,
        name: str = "model",
        max_batch_tokens: int = GPU_MAX_BATCH_TOKENS,
        max_batch_requests: int = DEFAULT_MAX_BATCH_REQUESTS,
        max_queue_inputs: int = DEFAULT_MAX_QUEUE_INPUTS,
        max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
        on_batch: Callable[[BatchStats], None] | None = None,
        dtype: type = np.float32,
        lane_forward: Forward | None = None,
    ) -> None:
        if min(max_batch_tokens, max_batch_requests, max_queue_inputs) < 1:
            raise ValueError(
                "max_batch_tokens, max_batch_requests and max_queue_inputs must be >= 1"
            )
        self.name = name
        self.dimension = dimension
        self.dtype = dtype
        self.max_batch_tokens = max_batch_tokens
        self.yield_batch_tokens = max(1, max_batch_tokens // YIELD_DIVISOR)
        self.max_batch_requests = max_batch_requests
        self.max_queue_inputs = max_queue_inputs
        self.max_wait_seconds = max_wait_seconds
        self.policy = AdmissionPolicy(max_wait_seconds, max_batch_tokens)
        self._forward = forward
        self._lane_forward = lane_forward
        self._on_batch = on_batch
        self._queues: dict[Priority, deque[_Entry]] = {p: deque() for p in Priority}
        self._window: list[_Row] = []  # taken from a queue, not yet batched; longest first
        self._window_priority = Priority.INTERACTIVE
        self._parked: list[_Row] = []  # batch rows set aside for interactive work
        self._queued_inputs = 0  # inputs in the queues, the window and parked
        self._lane_inputs = dict.fromkeys(Priority, 0)  # the same, per lane
        self._queued_tokens = dict.fromkeys(Priority, 0)  # their tokens, per lane
        self._reserved_inputs = 0  # admitted requests still being tokenized: estimates
        self._reserved_tokens = dict.fromkeys(Priority, 0)
        self._last_interactive = -math.inf  # perf_counter of the last interactive submit
        self._interactive_seen = -math.inf  # ... of the last interactive submit or inline run
        # The lane of the worker's batch in the model (None: none), and whether `run_inline`'s is.
        self._worker_lane: Priority | None = None
        self._inline_running = False
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name=f"embedserve-batcher-{name}", daemon=True
        )

    @property
    def queued_inputs(self) -> int:
        """Inputs waiting for a batch (not those running now)."""
        return self._queued_inputs

    def lane_inputs(self, priority: Priority) -> int:
        """The inputs of `priority` among `queued_inputs`."""
        return self._lane_inputs[priority]

    @property
    def tokens_per_second(self) -> float | None:
        """Measured model throughput in real tokens per second (None before the first batch)."""
        return self.policy.rate

    def record_throughput(self, tokens: int, seconds: float) -> None:
        """Fold one batch (`tokens` real tokens in `seconds` of model time) into the rate."""
        with self._cond:
            self.policy.record_batch(tokens, seconds)

    def estimated_wait(self, tokens: int = 0, priority: Priority = Priority.INTERACTIVE) -> float:
        """Seconds until a new request of `tokens` tokens would be computed (0 while unmeasured):
        an interactive one waits for interactive work only, a batch one for all of it."""
        with self._cond:
            return self._wait_for(tokens, priority)

    def _wait_for(self, tokens: int, priority: Priority) -> float:
        ahead = self._queued_tokens[Priority.INTERACTIVE]
        ahead += self._reserved_tokens[Priority.INTERACTIVE]
        if priority is Priority.BATCH:
            ahead += self._queued_tokens[Priority.BATCH] + self._reserved_tokens[Priority.BATCH]
        return self.policy.seconds_for(ahead + tokens)

    def early_refusal(self, priority: Priority = Priority.INTERACTIVE) -> Refusal | None:
        """The refusal any new request of `priority` would get now, before its size is known
        (its body is not read yet); None when one could be admitted. Only a look: the caller
        that refuses says so with `refused_early`."""
        with self._cond:
            wait, limit = self._wait_for(0, priority), self.policy.limit(priority)
        return Refusal(wait, limit) if wait > limit else None

    def refused_early(self, priority: Priority) -> None:
        """A request of `priority` was refused before its body was read: a refusal as
        `reserve`'s are, so overload's quiet period starts again (under steady overload most
        refusals are these)."""
        with self._cond:
            self.policy.refused(time.monotonic(), priority)

    def reserve(
        self, inputs: int, tokens: int, priority: Priority = Priority.INTERACTIVE
    ) -> Reservation:
        """Admit a request of about `tokens` tokens, or raise QueueFullError with a Retry-After.

        Called before tokenizing, so a refusal costs microseconds whatever the request's size.
        With work queued, the policy refuses a request that would finish past its limit for
        `priority` (but never for its own compute time alone); a request that would take the
        queue past `max_queue_inputs` inputs is refused too. An empty queue takes any request.
        """
        shed: list[tuple[_Entry, QueueFullError]] = []
        try:
            with self._cond:
                if self._closed:
                    raise BatcherClosedError("the server is shutting down")
                now = time.monotonic()
                if priority is Priority.INTERACTIVE and self.policy.observe(
                    now, self._wait_for(0, priority)
                ):
                    shed = self._shed_past_limits()
                queued = self._queued_inputs + self._reserved_inputs
                if queued:
                    if queued + inputs > self.max_queue_inputs:
                        raise QueueFullError.inputs(queued, inputs, self.max_queue_inputs)
                    wait = self._wait_for(tokens, priority)
                    own = self.policy.seconds_for(tokens)
                    refusal = self.policy.decide(now, priority, wait, own)
                    if refusal is not None:
                        raise QueueFullError.refused(refusal)
                self._reserved_inputs += inputs
                self._reserved_tokens[priority] += tokens
        finally:
            for entry, error in shed:
                _settle(entry, error=error)
        return Reservation(self, inputs, tokens, priority)

    def _shed_past_limits(self) -> list[tuple[_Entry, QueueFullError]]:
        """Take the queued requests that would finish past their lane's limit off the tail of
        each queue, newest first, with the 429 each gets (lock held; the caller settles them
        outside it). Overload was just confirmed: admitted at the ceiling, they would set the
        admitted tail for seconds (admission.py). Requests with rows in a window or a model run
        stay, and so does a request whose own compute alone exceeds the limit (admitted, it could
        otherwise only come back into an empty queue): shedding stops at the first one kept."""
        self._unwind_window()
        shed = []
        for priority in Priority:
            queue, limit = self._queues[priority], self.policy.limit(priority)
            while queue:
                entry = queue[-1]
                wait = self._wait_for(0, priority)
                own = self.policy.seconds_for(entry.unbatched_tokens)
                if not entry.cancelled and (wait <= limit or own > limit):
                    break
                queue.pop()
                if not entry.cancelled:
                    self._forget(entry)
                    shed.append((entry, QueueFullError.refused(Refusal(wait, limit))))
        return shed

    def _unwind_window(self) -> None:
        """Put the window's requests that have no row in a batch yet back at the head of their
        queue, in arrival order (lock held): a window taken before overload holds up to
        WINDOW_BUDGETS full runs, more than the target, and they may be shed like the rest."""
        whole = {id(e): e for _, e, _ in self._window if e.unbatched == len(e.lengths)}
        if not whole:
            return
        self._window = [row for row in self._window if id(row[1]) not in whole]
        for entry in sorted(whole.values(), key=lambda e: e.enqueued, reverse=True):
            self._queues[entry.priority].appendleft(entry)

    def _unreserve(self, reservation: Reservation) -> None:
        """(lock held)"""
        if reservation.held:
            reservation.held = False
            self._reserved_inputs -= reservation.inputs
            self._reserved_tokens[reservation.priority] -= reservation.tokens

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop taking work, fail what is still waiting, and wait for the running batch."""
        self.stop()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def stop(self) -> None:
        """Stop taking work and fail what is still waiting (BatcherClosedError); the running
        batch finishes and its requests get their answers. Returns at once."""
        with self._cond:
            self._closed = True
            rows = [*self._window, *self._parked]
            queued = [e for queue in self._queues.values() for e in queue]
            waiting = {id(e): e for e in [*queued, *(row[1] for row in rows)]}
            for queue in self._queues.values():
                queue.clear()
            self._window = []
            self._parked = []
            self._queued_inputs = 0
            self._lane_inputs = dict.fromkeys(Priority, 0)
            self._queued_tokens = dict.fromkeys(Priority, 0)
            self._cond.notify_all()
        for entry in waiting.values():
            _settle(entry, error=BatcherClosedError("the server is shutting down"))

    def submit(
        self,
        sequences: Sequence[np.ndarray],
        reservation: Reservation | None = None,
        priority: Priority = Priority.INTERACTIVE,
    ) -> Ticket:
        """Queue one request's id sequences.

        With a `reservation` (from `reserve`) the request was admitted already and takes the
        reserved room and its priority. Without one, raises QueueFullError when the queue holds
        too many inputs; an empty queue always takes the request, so a request larger than the
        queue's cap is served when the server is idle instead of being refused forever.
        """
        if reservation is not None:
            priority = reservation.priority
        loop = asyncio.get_running_loop()
        entry = _Entry(sequences, self.dimension, loop, loop.create_future(), priority, self.dtype)
        with self._cond:
            if reservation is not None:
                self._unreserve(reservation)
            if not sequences:
                entry.future.set_result(entry.out)
                return Ticket(self, entry)
            if self._closed:
                raise BatcherClosedError("the server is shutting down")
            queued = self._queued_inputs + self._reserved_inputs
            if reservation is None and queued and queued + len(sequences) > self.max_queue_inputs:
                raise QueueFullError.inputs(queued, len(sequences), self.max_queue_inputs)
            self._queues[priority].append(entry)
            self._queued_inputs += len(sequences)
            self._lane_inputs[priority] += len(sequences)
            self._queued_tokens[priority] += entry.unbatched_tokens
            if priority is Priority.INTERACTIVE:
                self._last_interactive = self._interactive_seen = time.perf_counter()
            self._cond.notify()
        return Ticket(self, entry)

    def _drop(self, entry: _Entry) -> None:
        """Forget the entry's unbatched inputs; the worker skips its rows from now on."""
        with self._cond:
            self._forget(entry)

    def _forget(self, entry: _Entry) -> None:
        """`_drop` with the lock held."""
        if not entry.cancelled:
            entry.cancelled = True
            self._queued_inputs -= entry.unbatched
            self._lane_inputs[entry.priority] -= entry.unbatched
            self._queued_tokens[entry.priority] -= entry.unbatched_tokens
            entry.unbatched = entry.unbatched_tokens = 0

    # -- worker thread --

    def run_inline(
        self, sequences: Sequence[np.ndarray], reservation: Reservation | None = None
    ) -> np.ndarray | None:
        """Compute a tiny interactive request on the calling thread if no interactive work is
        queued or in the model; None when there is, and the caller submits it instead.

        For one short text the hand-offs cost as much as the rest of the server together: a
        notify that wakes the worker (on a busy machine the waking thread often loses its core
        there) and a callback back to the event loop (bench/NOTES.md, "One-text fast path").
        Batch-lane work does not hold it back: the request runs beside the worker's batch run
        (sessions take concurrent runs) instead of waiting for it, which is what keeps an
        interactive query's latency near its idle one under a batch flood (bench/NOTES.md,
        "Interactive beside batch work"); the worker starts no new batch until it is done. Beside
        a worker's run it takes the lane session, when there is one. The caller's thread is
        blocked for one small model run; with interactive work queued the fast path is never
        taken, so under interactive load every request takes turns on the worker.
        """
        with self._cond:
            if (
                self._closed
                or not sequences
                or self._inline_running
                or self._worker_lane is Priority.INTERACTIVE
                or self._lane_inputs[Priority.INTERACTIVE]
            ):
                return None
            if reservation is not None:
                self._unreserve(reservation)
            self._inline_running = True
            self._interactive_seen = time.perf_counter()
            forward = self._forward
            if self._worker_lane is not None and self._lane_forward is not None:
                forward = self._lane_forward  # beside the worker's run: one thread, no pool
        try:
            start = time.perf_counter()
            pooled = forward(list(sequences))
            end = time.perf_counter()
        finally:
            with self._cond:
                self._inline_running = False
                if self._queued_inputs:
                    self._cond.notify()
        self._finished(sequences, start, end, requests=1)
        return pooled

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._inline_running or not self._queued_inputs):
                    self._cond.wait()
                if self._closed:
                    return
                batch = self._take_batch()
                self._worker_lane = self._window_priority if batch else None
                forward = self._worker_forward()
            if batch:
                try:
                    self._compute(batch, forward)
                finally:
                    with self._cond:
                        self._worker_lane = None

    def _worker_forward(self) -> Forward:
        """The session for the worker's next run (lock held): the lane session for batch-lane
        work while interactive work was seen in the last YIELD_SECONDS, so that its threads leave
        a core to the interactive runs beside it; else the model's own, on every thread."""
        if (
            self._lane_forward is not None
            and self._window_priority is Priority.BATCH
            and time.perf_counter() - self._interactive_seen < YIELD_SECONDS
        ):
            return self._lane_forward
        return self._forward

    def _take_batch(self) -> list[tuple[_Entry, list[int]]]:
        """The next batch, as (request, input indices) pairs (lock held)."""
        self._window = [row for row in self._window if not row[1].cancelled]
        interactive_waiting = self._lane_inputs[Priority.INTERACTIVE] > 0
        if self._window and self._window_priority is Priority.BATCH and interactive_waiting:
            # A batch window is never taken from the parked rows while interactive work waits.
            self._parked, self._window = self._window, []
        if not self._window:
            self._next_window()
        budget = self.max_batch_tokens
        if self._window_priority is Priority.BATCH and (
            time.perf_counter() - self._last_interactive < YIELD_SECONDS
        ):
            budget = self.yield_batch_tokens
        rows = batch_rows([length for length, _, _ in self._window], 0, budget)
        taken, self._window = self._window[:rows], self._window[rows:]
        batch: dict[int, tuple[_Entry, list[int]]] = {}
        for length, entry, index in taken:
            batch.setdefault(id(entry), (entry, []))[1].append(index)
            entry.unbatched -= 1
            entry.unbatched_tokens -= length
            self._queued_tokens[entry.priority] -= length
            self._lane_inputs[entry.priority] -= 1
        self._queued_inputs -= rows
        return list(batch.values())

    def _next_window(self) -> None:
        """Interactive requests first; then the parked batch rows; then the batch queue."""
        if self._fill_window(Priority.INTERACTIVE):
            return
        parked, self._parked = [row for row in self._parked if not row[1].cancelled], []
        if parked:
            self._window, self._window_priority = parked, Priority.BATCH
            return
        self._fill_window(Priority.BATCH)

    def _fill_window(self, priority: Priority) -> bool:
        """Requests from the head of `priority`'s queue: about WINDOW_BUDGETS budgets of real
        tokens (and at most the policy's window of work at the measured rate), at least one
        request, at most the request cap; their rows sorted longest first. False: none."""
        queue = self._queues[priority]
        rows: list[_Row] = []
        tokens = requests = 0
        room = WINDOW_BUDGETS * self.max_batch_tokens
        if self.policy.rate is not None:
            work = int(self.policy.rate * self.policy.window_seconds)
            room = max(self.max_batch_tokens, min(room, work))
        while queue and requests < self.max_batch_requests:
            entry = queue[0]
            if entry.cancelled:
                queue.popleft()
                continue
            size = sum(entry.lengths)
            if requests and tokens + size > room:
                break
            queue.popleft()
            requests += 1
            tokens += size
            rows.extend((length, entry, index) for index, length in enumerate(entry.lengths))
        rows.sort(key=lambda row: -row[0])  # stable: equal lengths keep arrival order
        self._window, self._window_priority = rows, priority
        return bool(rows)

    def _compute(self, batch: list[tuple[_Entry, list[int]]], forward: Forward) -> None:
        sequences = [entry.sequences[i] for entry, taken in batch for i in taken]
        start = time.perf_counter()
        for entry, _ in batch:
            if entry.started is None:
                entry.started = start
        try:
            pooled = forward(sequences)
        except Exception as exc:  # a model failure fails these requests, not the worker
            log.exception("batch of %d inputs failed", len(sequences))
            for entry, _ in batch:
                self._drop(entry)
                _settle(entry, error=exc)
            return
        end = time.perf_counter()
        row = 0
        for entry, taken in batch:
            entry.out[taken] = pooled[row : row + len(taken)]
            row += len(taken)
            entry.remaining -= len(taken)
            if entry.remaining == 0 and not entry.cancelled:
                entry.finished = end
                _settle(entry, result=entry.out)
        self._finished(sequences, start, end, requests=len(batch))

    def _finished(
        self, sequences: Sequence[np.ndarray], start: float, end: float, requests: int
    ) -> None:
        """Fold a computed batch into the rate and the metrics."""
        lengths = [len(s) for s in sequences]
        real = sum(lengths)
        self.record_throughput(real, end - start)
        if self._on_batch is not None:
            self._on_batch(
                BatchStats(
                    inputs=len(sequences),
                    requests=requests,
                    padded_tokens=max(lengths) * len(lengths),
                    real_tokens=real,
                    seconds=end - start,
                )
            )


def _settle(
    entry: _Entry, *, result: np.ndarray | None = None, error: BaseException | None = None
) -> None:
    """Resolve the request's future on its own loop (futures are not thread-safe)."""

    def apply() -> None:
        if entry.future.done():
            return
        if error is not None:
            entry.future.set_exception(error)
        else:
            entry.future.set_result(result)

    try:
        entry.loop.call_soon_threadsafe(apply)
    except RuntimeError:  # the loop has closed: nobody is waiting any more
        pass
