"""Run one function over many items on a few threads at once, results in the items' order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_on_threads(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """`[fn(item) for item in items]`, `workers` at a time on threads of this call's own (each
    takes the next item when it is free, so uneven items even out). The first exception, in item
    order, is raised here once the items still running have finished; the rest are not started,
    and no thread outlives the call. Worth it where `fn` releases the GIL (ONNX Runtime's run):
    starting and joining the threads costs well under a millisecond."""
    with ThreadPoolExecutor(workers, thread_name_prefix="embedserve-fanout") as pool:
        futures = [pool.submit(fn, item) for item in items]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise
