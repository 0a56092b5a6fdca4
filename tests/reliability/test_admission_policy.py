"""The queue decision alone: a Batcher whose worker never starts, so nothing is computed and the
only inputs are the measured rate and what is queued or reserved; then the admission policy
itself, fed numbers and times, no threads and no clock."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from embedserve.admission import (
    BATCH_SHARE,
    DETECT_BATCHES,
    MIN_TARGET_SECONDS,
    QUIET_SECONDS,
    QUIET_TARGETS,
    TARGET_BATCHES,
    TARGET_SHARE_OF_CEILING,
    AdmissionPolicy,
    Priority,
)
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


# -- the policy alone: numbers in, decisions out --


# With 0.1 s model runs (the tests' usual rate and batch budget), the target in seconds.
TARGET = TARGET_BATCHES * 0.1


def overloaded_policy(max_wait: float = 10.0) -> AdmissionPolicy:
    """1,000 tokens/s and 100-token batches: one batch is 0.1 s, the target TARGET."""
    policy = AdmissionPolicy(max_wait, batch_tokens=100)
    policy.record_batch(1000, 1.0)
    assert policy.target == pytest.approx(TARGET)
    assert policy.detect_seconds == pytest.approx(DETECT_BATCHES * 0.1)
    # 2 s of interactive work ahead for a whole target: only the arrival that confirms it says so.
    assert [policy.observe(now, 2.0) for now in (0.0, 0.1, TARGET, TARGET + 0.1)] == [
        False,
        False,
        True,
        False,
    ]
    assert policy.overloaded
    return policy


def test_the_target_follows_the_service_time_within_its_bounds():
    policy = AdmissionPolicy(10.0, batch_tokens=1000)
    assert policy.target == 5.0  # unmeasured: its share of the ceiling
    policy.record_batch(1000, 0.5)  # a full batch takes 0.5 s
    assert policy.target == pytest.approx(TARGET_BATCHES * 0.5)
    policy = AdmissionPolicy(10.0, batch_tokens=1000)
    policy.record_batch(1000, 5.0)  # a slow model: the share of the ceiling bounds it
    assert policy.target == TARGET_SHARE_OF_CEILING * 10.0
    policy = AdmissionPolicy(10.0, batch_tokens=1000)
    policy.record_batch(10**9, 1.0)  # a very fast one: the floor does
    assert policy.target == MIN_TARGET_SECONDS


def test_a_passing_queue_never_lowers_the_limit():
    policy = AdmissionPolicy(10.0, batch_tokens=100)
    policy.record_batch(1000, 1.0)  # detection 1.6 s
    # Queues above the detection level, each drained before an interval (a target) passed.
    for start in (0.0, 1.0, 2.0, 3.0):
        policy.observe(start, 5.0)
        policy.observe(start + 0.9 * TARGET, 5.0)
        policy.observe(start + 0.95 * TARGET, 0.1)
    # A closed loop at capacity keeps a queue below the detection level: never overload.
    for now in (4.0, 5.0, 6.0, 7.0):
        policy.observe(now, 0.9 * DETECT_BATCHES * 0.1)
    assert not policy.overloaded
    assert policy.limit() == 10.0
    assert policy.decide(4.0, Priority.INTERACTIVE, wait=9.9) is None  # up to the ceiling


def test_a_standing_queue_brings_the_limit_down_to_the_target_and_it_stays_while_refusing():
    policy = overloaded_policy()
    assert policy.limit() == pytest.approx(TARGET)
    assert policy.window_seconds == pytest.approx(TARGET / 2)
    assert policy.decide(1.0, Priority.INTERACTIVE, wait=TARGET - 0.01) is None
    refusal = policy.decide(1.1, Priority.INTERACTIVE, wait=3.0)
    assert refusal is not None and refusal.limit == pytest.approx(TARGET)
    assert refusal.retry_after == math.ceil(3.0 - TARGET)
    # A short queue while refused clients wait out their Retry-After: still overloaded.
    policy.observe(3.0, 0.0)
    assert policy.overloaded
    # Nothing refused for the quiet period: back to the ceiling.
    quiet = max(QUIET_SECONDS, QUIET_TARGETS * policy.target)
    policy.observe(1.1 + quiet - 0.01, 0.0)
    assert policy.overloaded
    policy.observe(1.1 + quiet + 1e-9, 0.0)  # (1.1 + 3.0) - 1.1 < 3.0 in floating point
    assert not policy.overloaded
    assert policy.limit() == 10.0


def test_a_slow_machine_still_detects_a_standing_queue_below_the_ceiling():
    """A full model run of 2 s: the target is half the 10 s ceiling, and 16 runs would be far
    past the ceiling itself, a wait that admission never lets arrivals meet."""
    policy = AdmissionPolicy(10.0, batch_tokens=1000)
    policy.record_batch(1000, 2.0)
    assert policy.target == 5.0
    assert policy.detect_seconds == pytest.approx(7.5)
    for now in (0.0, 2.5, 5.0):
        policy.observe(now, 9.0)
    assert policy.overloaded
    assert policy.limit() == 5.0


def test_never_refused_for_its_own_size_alone():
    policy = overloaded_policy()
    assert policy.decide(2.0, Priority.INTERACTIVE, wait=5.0, own=5.0) is None
    assert policy.decide(2.0, Priority.INTERACTIVE, wait=5.1, own=5.0) is not None


def test_batch_is_refused_first_and_its_refusals_alone_are_no_overload():
    policy = AdmissionPolicy(10.0, batch_tokens=100)
    policy.record_batch(1000, 1.0)
    assert policy.limit(Priority.BATCH) == pytest.approx(BATCH_SHARE * 10.0)
    assert policy.decide(0.0, Priority.BATCH, wait=6.0) is not None
    assert policy.decide(0.0, Priority.INTERACTIVE, wait=6.0) is None
    policy = overloaded_policy()
    assert policy.limit(Priority.BATCH) == pytest.approx(BATCH_SHARE * TARGET)
    for now in (1.5, 2.5, 3.5):
        assert policy.decide(now, Priority.BATCH, wait=1.0) is not None
        policy.observe(now, 0.0)
    # Only batch work was refused since the standing queue was seen at 1.0.
    policy.observe(1.0 + max(QUIET_SECONDS, QUIET_TARGETS * policy.target), 0.0)
    assert not policy.overloaded


def test_priority_values():
    assert Priority.parse(None) is None
    assert Priority.parse(" Batch ") is Priority.BATCH
    assert Priority.parse("interactive") is Priority.INTERACTIVE
    with pytest.raises(ValueError, match="interactive, batch"):
        Priority.parse("urgent")


def test_confirmed_overload_sheds_the_queued_requests_that_would_finish_past_the_limit():
    """A burst admitted at the ceiling before overload was confirmed: once it is, the newest
    queued requests past the target get the 429 a new arrival would (oldest kept, in order),
    in both lanes; nothing is computed (the worker never starts)."""

    async def run() -> None:
        # 1,000 tokens/s and 10-token batches: a run is 0.01 s, the target its 0.1 s floor,
        # detection 0.16 s of work standing for 0.1 s.
        batcher = make(max_wait_seconds=10, max_batch_tokens=10)
        batcher.record_throughput(1000, 1.0)
        assert batcher.policy.target == pytest.approx(0.1)
        interactive = [batcher.submit(seqs(50)) for _ in range(6)]  # 0.3 s of work
        batch = [batcher.submit(seqs(40), priority=Priority.BATCH) for _ in range(3)]
        batcher.reserve(1, 1).release()  # 0.3 s ahead: above detection, not yet standing
        assert not batcher.policy.overloaded
        await asyncio.sleep(0.15)
        with pytest.raises(QueueFullError):  # confirms overload; itself past the limit
            batcher.reserve(1, 1)
        assert batcher.policy.overloaded
        await asyncio.sleep(0)  # the shed futures are settled through the loop
        kept = [t for t in interactive if not t._entry.future.done()]
        assert kept == interactive[:2]  # 0.1 s of work: within the target
        assert batcher.estimated_wait() == pytest.approx(0.1)
        for ticket in interactive[2:]:
            with pytest.raises(QueueFullError, match="finish in about") as info:
                await ticket.result()
            assert info.value.retry_after == 1
        # Batch work waits for all work and is admitted up to half the target: 0.05 s.
        for ticket in batch:
            with pytest.raises(QueueFullError, match="within 0.05s"):
                await ticket.result()
        assert batcher.queued_inputs == 2
        batcher.stop()

        # A request longer than the limit by itself is kept, and what is ahead of it too.
        batcher = make(max_wait_seconds=10, max_batch_tokens=10)
        batcher.record_throughput(1000, 1.0)
        small = batcher.submit(seqs(50))
        large = batcher.submit(seqs(300))  # 0.3 s alone, against a target of 0.1 s
        behind = batcher.submit(seqs(50))
        batcher.reserve(1, 1).release()
        await asyncio.sleep(0.15)
        with pytest.raises(QueueFullError):
            batcher.reserve(1, 1)
        await asyncio.sleep(0)
        assert [t._entry.future.done() for t in (small, large, behind)] == [False, False, True]
        with pytest.raises(QueueFullError):
            await behind.result()
        batcher.stop()
        for ticket in [*kept, small, large]:
            with pytest.raises(BatcherClosedError):
                await ticket.result()

    asyncio.run(run())


def test_a_window_taken_before_overload_is_shed_like_the_queue():
    """The worker's window holds up to 8 full runs, twice the target: its requests with no row
    in a batch go back to the queue's head in arrival order, and the newest are shed."""

    async def run() -> None:
        batcher = make(max_wait_seconds=10, max_batch_tokens=100)  # a run 0.1 s
        batcher.record_throughput(1000, 1.0)
        tickets = [batcher.submit(seqs(100)) for _ in range(20)]  # 2 s: above 1.6 s detection
        with batcher._cond:
            batcher._next_window()  # what the worker does before its next batch
        assert len(batcher._window) == 8
        batcher.reserve(1, 1).release()
        await asyncio.sleep(TARGET + 0.05)
        with pytest.raises(QueueFullError):
            batcher.reserve(1, 1)
        await asyncio.sleep(0)
        kept = TARGET_BATCHES  # requests of one run each
        assert [t._entry.future.done() for t in tickets] == [False] * kept + [True] * (20 - kept)
        assert batcher._window == []
        assert list(batcher._queues[Priority.INTERACTIVE]) == [t._entry for t in tickets[:kept]]
        assert batcher.estimated_wait() == pytest.approx(TARGET)
        for ticket in tickets[kept:]:
            with pytest.raises(QueueFullError):
                await ticket.result()
        batcher.stop()
        for ticket in tickets[:kept]:
            with pytest.raises(BatcherClosedError):
                await ticket.result()

    asyncio.run(run())


def test_the_batcher_counts_only_interactive_work_ahead_of_an_interactive_request():
    async def run() -> None:
        batcher = make(max_wait_seconds=2)
        batcher.record_throughput(1000, 1.0)
        batcher.submit(seqs(1500), priority=Priority.BATCH)  # 1.5 s of batch work queued
        with pytest.raises(QueueFullError):  # batch admits up to half the ceiling: 1 s
            batcher.reserve(1, 100, Priority.BATCH)
        assert batcher.estimated_wait(0, Priority.BATCH) == pytest.approx(1.5)
        assert batcher.estimated_wait() == 0.0
        batcher.reserve(1, 1900).release()  # interactive: 1.9 s of its own lane, admitted
        batcher.stop()

    asyncio.run(run())


def test_refusals_before_the_body_is_read_keep_overload_from_ending(monkeypatch):
    """Under steady overload most 429s come from the pipeline's early check, before a body is
    read: they count as refusals, so the quiet period does not run out while clients are still
    being refused and the limit stays at the target."""
    from types import SimpleNamespace

    from embedserve.server.config import ServerConfig
    from embedserve.server.metrics import Metrics
    from embedserve.server.pipeline import RequestPipeline

    clock = [100.0]
    monkeypatch.setattr("embedserve.batching.time.monotonic", lambda: clock[0])
    batcher = make(max_wait_seconds=10, max_batch_tokens=100)
    batcher.record_throughput(1000, 1.0)  # a full run 0.1 s: the target TARGET
    standing = batcher.reserve(1, 5000)  # 5 s of interactive work ahead of every arrival
    for clock[0] in (100.0, 100.2):
        batcher.reserve(1, 1).release()
    clock[0] = 100.4  # a standing queue for a whole target: overload, and this one refused
    with pytest.raises(QueueFullError):
        batcher.reserve(1, 1)
    assert batcher.policy.overloaded
    pipeline = RequestPipeline(ServerConfig(), Metrics())
    try:
        quiet = max(QUIET_SECONDS, QUIET_TARGETS * batcher.policy.target)
        for clock[0] in np.arange(100.5, 100.4 + quiet + 1.0, 0.25):
            with pytest.raises(QueueFullError):
                pipeline.refuse_early([SimpleNamespace(batcher=batcher)])
        standing.release()  # the queue drained: the next arrival gets past the early check
        batcher.reserve(1, 1).release()
        assert batcher.policy.overloaded
        assert batcher.policy.limit() == pytest.approx(TARGET)
    finally:
        pipeline.close()
