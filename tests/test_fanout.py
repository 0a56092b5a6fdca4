"""map_on_threads: results in item order; after a failure nothing more is started, the first
exception in item order is raised, and no thread outlives the call."""

from __future__ import annotations

import threading
import time

import pytest
from embedserve.fanout import map_on_threads


def _fanout_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("embedserve-fanout")]


def test_results_come_in_item_order():
    # Uneven items: the later ones finish first.
    def slow_first(i: int) -> int:
        time.sleep(0.02 * (4 - i))
        return i * i

    assert map_on_threads(slow_first, range(5), 3) == [0, 1, 4, 9, 16]
    assert map_on_threads(slow_first, [], 3) == []
    assert not _fanout_threads()


def test_after_a_failure_no_item_is_started():
    started: list[int] = []
    failed = threading.Event()

    def fn(i: int) -> int:
        started.append(i)
        if i == 1:
            failed.set()
            raise ValueError("item 1 broke")
        if i == 0:
            # Still running when item 1 fails: it finishes, and the free thread starts nothing.
            failed.wait(5)
            time.sleep(0.1)
        return i

    with pytest.raises(ValueError, match="item 1 broke"):
        map_on_threads(fn, range(10), 2)
    assert sorted(started) == [0, 1]
    assert not _fanout_threads()


def test_the_first_exception_in_item_order_is_raised():
    second_failed = threading.Event()

    def fn(i: int) -> int:
        if i == 0:
            second_failed.wait(5)  # fails after item 1 has
            raise RuntimeError("item 0 broke")
        try:
            raise RuntimeError(f"item {i} broke")
        finally:
            second_failed.set()

    with pytest.raises(RuntimeError, match="item 0 broke"):
        map_on_threads(fn, [0, 1], 2)
    assert not _fanout_threads()
