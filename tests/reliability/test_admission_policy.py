"""The queue decision alone: a Batcher whose worker never starts, so nothing is computed and the
only inputs are the measured rate and what is queued or reserved."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from embedserve.batching import Batcher, BatcherClosedError, QueueFullError


def make(**kwargs) -> Batcher:
    return Batcher(lambda seqs: np.zeros((len(seqs), 4), np.float32), 4, **kwargs)


def seqs(*lengths: int) -> list[np.ndarray]:
    return [np.ones(n, np.int64) for n in lengths]


def test_unmeasured_or_empty_queue_admits_anything():
    batcher = make(max_wait_seconds=1)
    batcher.reserve(2048, 10**7).release()  # no rate yet: only the input cap applies
    batcher.record_throughput(1000, 1.0)
    held = batcher.reserve(1, 10**6)  # 1,000 s of work, but nothing is ahead of it
    assert batcher.estimated_wait() == pytest.approx(1000.0)
    held.release()
    assert batcher.estimated_wait() == 0.0


def test_refused_when_it_would_finish_past_the_limit_with_retry_after_from_the_estimate():
    batcher = make(max_wait_seconds=2)
    batcher.record_throughput(1000, 1.0)  # 1,000 tokens/s
    first = batcher.reserve(1, 1500)  # 1.5 s queued
    batcher.reserve(1, 400).release()  # would finish at 1.9 s: fits
    with pytest.raises(QueueFullError) as info:
        batcher.reserve(1, 4000)  # would finish at 5.5 s: 3.5 s over
    assert info.value.retry_after == 4
    assert "about 5.5s" in str(info.value)
    first.release()
    batcher.reserve(1, 4000)  # the queue is empty again: admitted


def test_submit_takes_the_reservation_and_counts_real_tokens():
    async def run() -> None:
        batcher = make(max_wait_seconds=1)
        batcher.record_throughput(100, 1.0)
        reservation = batcher.reserve(2, 50)  # an estimate of 50 tokens
        batcher.submit(seqs(10, 20), reservation)  # the real count is 30
        assert batcher.estimated_wait() == pytest.approx(0.3)
        assert batcher.queued_inputs == 2
        reservation.release()  # after submit: a no-op
        assert batcher.estimated_wait() == pytest.approx(0.3)
        with pytest.raises(QueueFullError):
            batcher.reserve(1, 200)
        batcher.stop()
        with pytest.raises(BatcherClosedError):
            batcher.reserve(1, 1)

    asyncio.run(run())


def test_the_input_cap_still_applies():
    batcher = make(max_queue_inputs=10)
    first = batcher.reserve(8, 8)
    with pytest.raises(QueueFullError, match="at most 10"):
        batcher.reserve(3, 3)
    first.release()
    batcher.reserve(30, 30)  # empty queue: taken whatever its size


def test_the_throughput_estimate_follows_recent_batches():
    batcher = make()
    batcher.record_throughput(1000, 1.0)
    for _ in range(40):
        batcher.record_throughput(100, 1.0)
    assert batcher.tokens_per_second == pytest.approx(100, rel=0.01)
