"""Run one function over many items on a few threads at once, results in the items' order."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _NotStarted(Exception):
    """An item a thread took after another item had failed, and did not run."""


def map_on_threads(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """`[fn(item) for item in items]`, `workers` at a time on threads of this call's own (each
    takes the next item when it is free, so uneven items even out). Once an item fails, no item
    is started; the first exception in item order among those that ran is raised here once the
    items still running have finished, and no thread outlives the call. Worth it where `fn`
    releases the GIL (ONNX Runtime's run): starting and joining the threads costs well under a
    millisecond."""
    failed = threading.Event()

    def run(item: T) -> R:
        # Checked in the thread, as it takes the item: cancelling the queue from this call
        # would leave a window in which a free thread takes one more.
        if failed.is_set():
            raise _NotStarted
        try:
            return fn(item)
        except BaseException:
            failed.set()
            raise

    with ThreadPoolExecutor(workers, thread_name_prefix="embedserve-fanout") as pool:
        futures = [pool.submit(run, item) for item in items]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:
            failed.set()  # interrupted here (Ctrl-C): start nothing more either
            raise
        finally:
            if failed.is_set():
                for future in futures:
                    future.cancel()  # the queued ones; those running finish before the pool exits
    # Every thread has joined: each future is done or cancelled.
    for future in futures:
        if future.cancelled():
            continue
        error = future.exception()
        if error is not None and not isinstance(error, _NotStarted):
            raise error
    return [future.result() for future in futures]
