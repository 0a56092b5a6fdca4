"""One path for every request, whatever its task (embed, rerank, score, tokenize, decode, ...) and
whatever wire format asked for it. Knows nothing of HTTP, of tasks, or of wire formats.

A route adapter parses its body into a task's `Job` and hands it to `RequestPipeline.run`:

1. before the body is read, `refuse_early`: 503 while draining, 429 when every model's queue
   already holds more work than its admission policy admits now (a refusal costs the same
   whatever the body's size, and counts as one for the policy's overload state; routes that
   run no model are refused only while draining);
2. building the job runs the task's cheap checks (counts, characters: `server.limits`), which
   need no tokenizer;
3. admission: 503 while draining; room on the model's batcher reserved from the job's estimated
   tokens, or 429 with `Retry-After` from the estimated wait, before any tokenizing
   (`embedserve.admission`: the limit follows the measured service time under overload, and
   batch-priority work is refused first);
4. the job's bounded tokenization steps, each checking the token limits, on a shared worker pool
   (one step per request in the pool's FIFO at a time, so concurrent requests take turns);
5. the model's batcher (shared with every other request for that model); a tiny interactive job
   runs on the loop's thread instead when no interactive work is queued or in the model, beside
   any batch-lane run (`Batcher.run_inline`);
6. the job's finish (scores, cut and normalize, render), off the loop when it is large.

Small interactive jobs tokenize and finish on the loop (cheaper than a thread hop); batch-priority
jobs never do, so the loop stays free for the interactive requests beside them.

Every admitted request counts in `active` until it is answered: a drain waits for all of them.

The caller may pass `until`, through which every wait of the job is awaited (the HTTP layer gives
up there when the client hangs up). A job answered on the loop never waits, so it costs no task.
"""

from __future__ import annotations

import asyncio
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from embedserve.admission import Priority
from embedserve.batching import Batcher, BatcherClosedError, QueueFullError, Reservation
from embedserve.server.config import ServerConfig
from embedserve.server.lifecycle import Drain
from embedserve.server.limits import DEFAULT_TOKENS_PER_CHAR
from embedserve.server.metrics import Metrics
from embedserve.server.niceness import lower_this_thread
from embedserve.server.registry import ServedModel

R = TypeVar("R")
T = TypeVar("T")

# Up to about this many tokens, tokenizing on the event loop (tens of microseconds) costs less than
# the hop to a worker thread and back (~0.4 ms of a 1-text request's latency, bench/NOTES.md).
INLINE_TOKENS = 256
# Below this many values, finishing and rendering on the event loop costs less than a thread hop.
INLINE_VALUES = 64 * 1024
# Rows of at most this many tokens in all run on the event loop's thread when no interactive work
# is ahead (`Batcher.run_inline`): a model run of a millisecond or two, against two hand-offs.
INLINE_MODEL_TOKENS = 64


class Job(ABC, Generic[R]):
    """One request of one task on its way through the pipeline.

    Its constructor runs the task's cheap checks; `steps` tokenize in bounded units (each may
    raise a 400); `rows` are what the model's batcher computes; `finish` turns the batcher's
    output (None for a task that runs no model) into the adapter's result.
    """

    #: Rows the job queues on the model's batcher.
    size: int = 0
    #: Characters of text the job tokenizes (0 for token ids): the tokens-per-character estimate.
    characters: int = 0

    def estimated_tokens(self, tokens_per_char: float) -> int:
        """Tokens the model will see, estimated without tokenizing."""
        return 0

    @abstractmethod
    def steps(self) -> Iterable[Callable[[], None]]:
        """Bounded units of tokenizer work, run in order."""

    def rows(self) -> Sequence[Any]:
        return ()

    @property
    def usage_tokens(self) -> int:
        """Tokens the model saw (after truncation, special tokens included): `usage`."""
        return 0

    @property
    def content_tokens(self) -> int:
        """Tokens the `characters` became (untruncated, special tokens left out)."""
        return 0

    def finish_cost(self, outputs: np.ndarray | None) -> int:
        """About how many values `finish` writes: decides whether it runs on the loop."""
        return 0 if outputs is None else int(outputs.size)

    @abstractmethod
    def finish(self, outputs: np.ndarray | None) -> R: ...


class Until:
    """How the pipeline awaits each wait of a job: as it is. The HTTP layer's gives up when the
    client hangs up (`server.plumbing`)."""

    async def __call__(self, work: Awaitable[T]) -> T:
        return await work


@dataclass(frozen=True)
class Done(Generic[R]):
    """A finished request: the job's result, its usage and its phases in seconds."""

    result: R
    tokens: int
    tokenization_seconds: float
    queue_seconds: float
    inference_seconds: float
    # Of the texts as sent (the job's `characters`: 0 for token ids in the model's vocabulary).
    characters: int = 0


_AS_IS = Until()


class RequestPipeline:
    def __init__(self, config: ServerConfig, metrics: Metrics, drain: Drain | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.drain = drain
        self.active = 0  # requests admitted and not yet answered: a drain waits for them
        # Tokenizing and rendering are CPU work: a few threads, sized to the cores, off the loop.
        workers = min(4, os.cpu_count() or 1)
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="embedserve-cpu")
        # Batch work's share runs as far below the loop as the models' threads do: rendering a
        # flood's answers (~250 KB of JSON floats each) then yields the core to an interactive
        # request running its model on the loop's thread (bench/NOTES.md, "Batch work's CPU
        # below the loop").
        self._batch_executor = ThreadPoolExecutor(
            workers,
            thread_name_prefix="embedserve-batch-cpu",
            initializer=lower_this_thread,
            initargs=(config.model_nice,),
        )
        # Measured tokens per character, per model, for estimating a request before tokenizing.
        self._tokens_per_char: dict[str, float] = {}

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._batch_executor.shutdown(wait=False, cancel_futures=True)

    def off_loop(
        self, work: Callable[..., T], *args: Any, priority: Priority = Priority.INTERACTIVE
    ) -> asyncio.Future[T]:
        """`work(*args)` on the pipeline's CPU threads: tokenizing, finishing, parsing a large
        body; batch work's on threads below the loop."""
        executor = self._batch_executor if priority is Priority.BATCH else self._executor
        return asyncio.get_running_loop().run_in_executor(executor, work, *args)

    def refuse_if_draining(self) -> None:
        if self.drain is not None and self.drain.draining:
            raise BatcherClosedError("the server is shutting down")

    def refuse_early(
        self, models: Sequence[ServedModel], priority: Priority = Priority.INTERACTIVE
    ) -> None:
        """Before a body is read: 503 while draining, and 429 when every model's queue already
        holds more work than it admits now for `priority` (a request for any of them would be
        refused), so a refusal costs the same whatever the body's size."""
        self.refuse_if_draining()
        batchers = [m.batcher for m in models if m.batcher is not None]
        refusals = [r for b in batchers if (r := b.early_refusal(priority)) is not None]
        if refusals and len(refusals) == len(batchers):
            for batcher in batchers:
                batcher.refused_early(priority)
            self.metrics.refused[priority].inc()
            raise QueueFullError.refused(min(refusals, key=lambda r: r.retry_after))

    async def run(
        self,
        job: Job[R],
        model: str,
        batcher: Batcher | None = None,
        priority: Priority = Priority.INTERACTIVE,
        until: Until | None = None,
    ) -> Done[R]:
        """Admit `job`, tokenize it, compute its rows on `batcher` (None: a task that runs no
        model, such as tokenize) at `priority`, and finish it, awaiting each wait through `until`.
        Cancelling the awaiting task (or `until` raising) drops the job's rows still queued."""
        wait = until or _AS_IS
        self.refuse_if_draining()
        ratio = self._tokens_per_char.get(model, DEFAULT_TOKENS_PER_CHAR)
        estimate = job.estimated_tokens(ratio)
        reservation: Reservation | None = None
        queue = inference = 0.0
        self.active += 1
        try:
            if batcher is not None:
                reservation = batcher.reserve(job.size, estimate, priority)
                self.metrics.admitted[priority].inc()
            started = time.perf_counter()
            # Batch work never runs on the loop: the interactive requests beside it need it.
            inline = estimate <= INLINE_TOKENS and priority is Priority.INTERACTIVE
            for step in job.steps():
                if inline:
                    step()
                else:
                    await wait(self.off_loop(step, priority=priority))
            tokenization = time.perf_counter() - started
            outputs = None
            if batcher is not None:
                rows = job.rows()
                if inline and rows and sum(len(row) for row in rows) <= INLINE_MODEL_TOKENS:
                    computing = time.perf_counter()
                    outputs = batcher.run_inline(rows, reservation)
                    inference = time.perf_counter() - computing
                if outputs is None:
                    ticket = batcher.submit(rows, reservation)
                    try:
                        outputs = await wait(ticket.result())
                    finally:
                        ticket.cancel()  # a no-op once computed; drops queued rows if cancelled
                    queue, inference = ticket.queue_seconds, ticket.inference_seconds
            if job.finish_cost(outputs) <= INLINE_VALUES and priority is Priority.INTERACTIVE:
                result = job.finish(outputs)
            else:
                result = await wait(self.off_loop(job.finish, outputs, priority=priority))
        except QueueFullError:
            # Admission's 429: from `reserve` (refused), or from the queue after it (shed).
            (self.metrics.refused if reservation is None else self.metrics.shed)[priority].inc()
            raise
        finally:
            if reservation is not None:
                reservation.release()  # a no-op once submitted
            self.active -= 1
        self._learn(model, job)
        tokens = job.usage_tokens
        if batcher is not None:
            series = self.metrics.for_model(model)
            series.tokens.inc(tokens)
            series.inputs.inc(job.size)
            series.tokenization.observe(tokenization)
            series.queue.observe(queue)
            series.queue_by_priority[priority].observe(queue)
            series.inference.observe(inference)
        return Done(result, tokens, tokenization, queue, inference, job.characters)

    def _learn(self, model: str, job: Job[Any]) -> None:
        """Fold the job's measured tokens per character into the model's estimate."""
        if not job.characters:
            return
        ratio = self._tokens_per_char.get(model, DEFAULT_TOKENS_PER_CHAR)
        measured = min(2.0, max(0.01, job.content_tokens / job.characters))
        self._tokens_per_char[model] = ratio + 0.2 * (measured - ratio)
