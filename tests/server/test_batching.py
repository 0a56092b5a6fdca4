"""The batcher alone, with a fake model whose output says which sequence each row came from."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from embedserve import batching
from embedserve.admission import Priority
from embedserve.batching import (
    WINDOW_BUDGETS,
    Batcher,
    BatcherClosedError,
    BatchStats,
    QueueFullError,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import UNHURRIED


class FakeModel:
    """forward() → rows [first id, length, batch number]; records every batch; can be held shut."""

    def __init__(self, *, gated: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        if not gated:
            self.gate.set()

    def forward(self, sequences: list[np.ndarray]) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(60), "test forgot to open the gate"
        self.batches.append([len(s) for s in sequences])
        number = len(self.batches)
        return np.array([[s[0], len(s), number] for s in sequences], dtype=np.float32)


def seqs(tag: int, lengths: list[int]) -> list[np.ndarray]:
    """Sequences whose first id encodes (request tag, input index)."""
    return [np.full(n, tag * 1000 + i, dtype=np.int64) for i, n in enumerate(lengths)]


def run(coro):
    return asyncio.run(coro)


def make(model: FakeModel, **kwargs) -> Batcher:
    # A window holds at most a share of max_wait_seconds of work at the measured rate, and the
    # first batch here is measured while the test holds it at the gate: UNHURRIED's wait keeps
    # windows at WINDOW_BUDGETS budgets however long that hold lasts on this machine.
    kwargs.setdefault("max_wait_seconds", UNHURRIED["max_wait_seconds"])
    batcher = Batcher(model.forward, 3, **kwargs)
    batcher.start()
    return batcher


def test_results_come_back_in_input_order():
    model = FakeModel()
    batcher = make(model)

    async def main():
        ticket = batcher.submit(seqs(1, [3, 9, 1, 5]))
        return await ticket.result()

    out = run(main())
    batcher.close()
    assert out[:, 0].tolist() == [1000, 1001, 1002, 1003]
    assert out[:, 1].tolist() == [3, 9, 1, 5]


def test_a_request_larger_than_a_batch_is_split_and_reassembled():
    model = FakeModel()
    stats: list[BatchStats] = []
    batcher = make(model, max_batch_tokens=20, on_batch=stats.append)

    async def main():
        return await batcher.submit(seqs(2, [10, 10, 4, 4, 4, 4, 10])).result()

    out = run(main())
    batcher.close()
    assert out[:, 0].tolist() == [2000 + i for i in range(7)]
    assert len(model.batches) > 1
    for batch in model.batches:
        assert max(batch) * len(batch) <= 20
    assert sum(s.inputs for s in stats) == 7
    assert all(
        s.padded_tokens == max(b) * len(b) for s, b in zip(stats, model.batches, strict=True)
    )


def test_a_sequence_over_the_budget_still_gets_a_batch_of_its_own():
    model = FakeModel()
    batcher = make(model, max_batch_tokens=8)

    async def main():
        return await batcher.submit(seqs(3, [50, 2])).result()

    out = run(main())
    batcher.close()
    assert out[:, 1].tolist() == [50, 2]
    assert [50] in model.batches


def test_concurrent_requests_share_batches_and_each_gets_its_own_rows():
    model = FakeModel(gated=True)
    stats: list[BatchStats] = []
    batcher = make(model, on_batch=stats.append)

    async def main():
        first = batcher.submit(seqs(0, [4]))
        assert await asyncio.to_thread(
            model.entered.wait, 60
        )  # the worker holds request 0 in forward()
        rest = [batcher.submit(seqs(tag, [tag % 5 + 1] * (tag % 3 + 1))) for tag in range(1, 20)]
        model.gate.set()
        return await asyncio.gather(first.result(), *(t.result() for t in rest))

    results = run(main())
    batcher.close()
    for tag, out in enumerate(results):
        assert out[:, 0].tolist() == [tag * 1000 + i for i in range(len(out))]
    assert max(s.requests for s in stats) == 19  # everyone queued behind request 0 rode together


def test_requests_per_batch_are_capped():
    model = FakeModel(gated=True)
    stats: list[BatchStats] = []
    batcher = make(model, max_batch_requests=3, on_batch=stats.append)

    async def main():
        first = batcher.submit(seqs(0, [2]))
        assert await asyncio.to_thread(model.entered.wait, 60)
        rest = [batcher.submit(seqs(tag, [2])) for tag in range(1, 8)]
        model.gate.set()
        await asyncio.gather(first.result(), *(t.result() for t in rest))

    run(main())
    batcher.close()
    assert max(s.requests for s in stats) == 3


def test_a_full_queue_refuses_at_once_but_an_empty_one_takes_anything():
    model = FakeModel(gated=True)
    batcher = make(model, max_queue_inputs=4)

    async def main():
        running = batcher.submit(seqs(0, [2]))
        assert await asyncio.to_thread(model.entered.wait, 60)
        big = batcher.submit(seqs(1, [2] * 3))  # queue empty (request 0 is running): accepted
        assert batcher.queued_inputs == 3
        batcher.submit(seqs(2, [2]))  # 4 queued: at the cap, still fine
        with pytest.raises(QueueFullError) as info:
            batcher.submit(seqs(3, [2]))
        assert info.value.retry_after >= 1
        model.gate.set()
        await asyncio.gather(running.result(), big.result())

    run(main())
    batcher.close()

    lone = make(FakeModel(), max_queue_inputs=2)

    async def oversized():
        return await lone.submit(seqs(4, [1] * 5)).result()

    assert run(oversized()).shape == (5, 3)
    lone.close()


def test_cancelled_requests_are_dropped_before_they_are_batched():
    model = FakeModel(gated=True)
    batcher = make(model)

    async def main():
        running = batcher.submit(seqs(0, [3]))
        assert await asyncio.to_thread(model.entered.wait, 60)
        doomed = batcher.submit(seqs(1, [7, 7, 7]))
        kept = batcher.submit(seqs(2, [5]))
        assert batcher.queued_inputs == 4
        doomed.cancel()
        assert batcher.queued_inputs == 1
        model.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await doomed.result()
        return await kept.result(), await running.result()

    kept, _ = run(main())
    batcher.close()
    assert kept[:, 0].tolist() == [2000]
    assert 7 not in [n for batch in model.batches for n in batch]


def test_a_model_error_fails_its_requests_and_the_worker_carries_on():
    calls = []

    def forward(sequences):
        calls.append(len(sequences))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return np.zeros((len(sequences), 2), np.float32)

    batcher = Batcher(forward, 2)
    batcher.start()

    async def main():
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(seqs(0, [1])).result()
        return await batcher.submit(seqs(1, [1, 1])).result()

    assert run(main()).shape == (2, 2)
    batcher.close()


def test_close_fails_what_is_still_queued():
    model = FakeModel(gated=True)
    batcher = make(model)

    async def main():
        batcher.submit(seqs(0, [1]))
        assert await asyncio.to_thread(model.entered.wait, 60)
        queued = batcher.submit(seqs(1, [1]))
        closing = asyncio.get_running_loop().run_in_executor(None, batcher.close)
        while batcher.queued_inputs:  # until close() has taken the queued request away
            await asyncio.sleep(0.01)
        model.gate.set()
        await closing
        with pytest.raises(BatcherClosedError):
            await queued.result()
        with pytest.raises(BatcherClosedError):
            batcher.submit(seqs(2, [1]))

    run(main())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    requests=st.lists(
        st.lists(st.integers(1, 40), min_size=1, max_size=12), min_size=1, max_size=12
    ),
    budget=st.integers(1, 120),
    cap=st.integers(1, 6),
)
def test_any_mix_of_requests_gets_its_own_rows_under_the_budget(requests, budget, cap):
    model = FakeModel(gated=True)
    batcher = make(model, max_batch_tokens=budget, max_batch_requests=cap)

    async def main():
        first = batcher.submit(seqs(99, [1]))
        assert await asyncio.to_thread(model.entered.wait, 60)
        tickets = [batcher.submit(seqs(tag, lengths)) for tag, lengths in enumerate(requests)]
        model.gate.set()
        await first.result()
        return await asyncio.gather(*(t.result() for t in tickets))

    results = run(main())
    batcher.close()
    for tag, (lengths, out) in enumerate(zip(requests, results, strict=True)):
        assert out[:, 0].tolist() == [tag * 1000 + i for i in range(len(lengths))]
        assert out[:, 1].tolist() == lengths
    for batch in model.batches:
        assert len(batch) == 1 or max(batch) * len(batch) <= budget
    assert batcher.queued_inputs == 0


def test_a_long_row_does_not_drag_short_rows_to_its_length():
    model = FakeModel(gated=True)
    stats: list[BatchStats] = []
    batcher = make(model, on_batch=stats.append)

    async def main():
        first = batcher.submit(seqs(0, [1]))
        assert await asyncio.to_thread(model.entered.wait, 60)
        mixed = batcher.submit(seqs(1, [10] * 30 + [256] + [60, 40]))
        other = batcher.submit(seqs(2, [12, 8]))
        model.gate.set()
        await first.result()
        return await mixed.result(), await other.result()

    mixed, other = run(main())
    batcher.close()
    assert mixed[:, 1].tolist() == [10] * 30 + [256, 60, 40] and other[:, 1].tolist() == [12, 8]
    # Longest first; a new batch where padding would more than double a row (beyond the slack).
    assert [sorted(b, reverse=True) for b in model.batches[1:]] == [
        [256],
        [60, 40],
        [12] + [10] * 30 + [8],
    ]
    assert stats[1].requests == 1 and stats[3].requests == 2


def test_windows_are_served_in_arrival_order():
    model = FakeModel(gated=True)
    batcher = make(model, max_batch_tokens=64)
    window = WINDOW_BUDGETS * 64
    lengths = [3, window - 2, 5, window - 20]

    async def main():
        first = batcher.submit(seqs(0, [1]))
        assert await asyncio.to_thread(model.entered.wait, 60)
        tickets = [batcher.submit(seqs(tag, [n])) for tag, n in enumerate(lengths, start=1)]
        model.gate.set()
        await first.result()
        return await asyncio.gather(*(t.result() for t in tickets))

    results = run(main())
    batcher.close()
    # Each window holds about WINDOW_BUDGETS budgets of real tokens: {3}, {window-2}, then
    # {5, window-20}; inside a window, longest first.
    assert model.batches[1:] == [[3], [window - 2], [window - 20], [5]]
    assert [int(r[0, 2]) for r in results] == [2, 3, 5, 4]


@pytest.mark.parametrize(
    ("max_wait", "batches"),
    [
        # 0.5 s windows at 100 tokens/s: 64 tokens, so {10, 30, 10} then {30}.
        (2.0, [[30, 10], [10], [30]]),
        # A quarter of 40 s: the window is WINDOW_BUDGETS budgets, all four sorted together.
        (40.0, [[30, 30], [10, 10]]),
    ],
)
def test_the_window_follows_the_admitted_wait(max_wait, batches):
    model = FakeModel()
    batcher = Batcher(model.forward, 3, max_batch_tokens=64, max_wait_seconds=max_wait)
    batcher.record_throughput(100, 1.0)  # as if measured: 100 real tokens a second

    async def main():
        tickets = [batcher.submit(seqs(tag, [n])) for tag, n in enumerate([10, 30, 10, 30])]
        batcher.start()  # every request is queued before the first window is taken
        return await asyncio.gather(*(t.result() for t in tickets))

    results = run(main())
    batcher.close()
    assert model.batches == batches
    assert [int(r[0, 1]) for r in results] == [10, 30, 10, 30]


def test_a_tiny_interactive_request_runs_beside_batch_work_but_waits_for_interactive_work():
    caller = threading.get_ident()
    gate, entered = threading.Event(), threading.Event()

    def forward(sequences):
        if threading.get_ident() != caller:  # only the worker's runs are held
            entered.set()
            assert gate.wait(60), "test forgot to open the gate"
        return np.array([[s[0], len(s), 0] for s in sequences], dtype=np.float32)

    batcher = Batcher(forward, 3, max_batch_tokens=64)
    batcher.start()

    async def main():
        flood = batcher.submit(seqs(1, [4, 4]), priority=Priority.BATCH)
        assert entered.wait(60)  # a batch-lane run is in the model, held there
        out = batcher.run_inline(seqs(2, [3]))
        assert out is not None and out[:, 0].tolist() == [2000]  # computed beside it
        gate.set()
        assert (await flood.result())[:, 0].tolist() == [1000, 1001]
        gate.clear()
        entered.clear()
        ticket = batcher.submit(seqs(3, [4]))  # an interactive run in the model
        assert entered.wait(60)
        assert batcher.run_inline(seqs(4, [3])) is None  # takes its turn behind it
        gate.set()
        assert (await ticket.result())[:, 0].tolist() == [3000]

    run(main())
    batcher.close()


def test_a_tiny_request_runs_on_the_calling_thread_only_when_the_model_is_idle():
    threads: list[int] = []
    model = FakeModel()

    def forward(sequences):
        threads.append(threading.get_ident())
        return model.forward(sequences)

    batcher = Batcher(forward, 3, max_batch_tokens=64)

    async def main():
        reservation = batcher.reserve(1, 3)
        out = batcher.run_inline(seqs(1, [3]), reservation)
        assert out is not None and out[:, 0].tolist() == [1000]
        assert threads == [threading.get_ident()]  # no hand-off to the worker
        assert batcher.estimated_wait() == 0.0 and not reservation.held
        assert batcher.tokens_per_second is not None  # measured like any batch
        # With work queued (the worker is not started here), the fast path is refused and
        # the request goes through the queue behind it.
        ticket = batcher.submit(seqs(2, [4]))
        assert batcher.run_inline(seqs(3, [2])) is None
        batcher.start()
        assert (await ticket.result())[:, 0].tolist() == [2000]
        assert threads[-1] != threading.get_ident()

    run(main())
    batcher.close()


def make_lanes():
    """A batcher over a "main" and a "lane" fake session that record (session, first id)
    of each run; the worker's runs wait at the gate."""
    caller = threading.get_ident()
    runs: list[tuple[str, int]] = []
    gate, entered = threading.Event(), threading.Event()

    def session(name: str):
        def forward(sequences):
            runs.append((name, int(sequences[0][0])))
            if threading.get_ident() != caller:  # only the worker's runs are held
                entered.set()
                assert gate.wait(60), "test forgot to open the gate"
            return np.array([[s[0], len(s), 0] for s in sequences], dtype=np.float32)

        return forward

    batcher = Batcher(session("main"), 3, max_batch_tokens=64, lane_forward=session("lane"))
    return batcher, runs, gate, entered


# Seen "recently" for an hour, or never: 1 s (the default) is a race a stalled worker can lose.
@pytest.mark.parametrize("seen_for", [3600.0, 0.0])
def test_batch_work_takes_the_lane_session_while_interactive_work_is_around(monkeypatch, seen_for):
    monkeypatch.setattr(batching, "YIELD_SECONDS", seen_for)
    idle, idle_runs, _, _ = make_lanes()
    assert idle.run_inline(seqs(1, [2])) is not None  # the model idle: its own session
    assert idle_runs == [("main", 1000)]
    batcher, runs, gate, entered = make_lanes()
    batcher.start()

    async def main():
        first = batcher.submit(seqs(2, [4, 4]), priority=Priority.BATCH)
        assert entered.wait(60)  # a batch-lane run in the model, held there
        # Beside it, a tiny interactive request runs on the lane session, on this thread.
        assert batcher.run_inline(seqs(3, [3]))[:, 0].tolist() == [3000]
        second = batcher.submit(seqs(4, [3, 5, 4]), priority=Priority.BATCH)
        gate.set()
        assert (await first.result())[:, 0].tolist() == [2000, 2001]
        assert (await second.result())[:, 0].tolist() == [4000, 4001, 4002]
        interactive = batcher.submit(seqs(5, [2]))  # queued interactive work: the worker's turn
        assert (await interactive.result())[:, 0].tolist() == [5000]

    run(main())
    batcher.close()
    # No interactive work seen yet: the model's own session. The next batch-lane run takes the
    # lane session while interactive work was seen within YIELD_SECONDS, the model's own after;
    # interactive runs on the worker always take the model's own.
    after = "lane" if seen_for else "main"
    assert runs == [("main", 2000), ("lane", 3000), (after, 4001), ("main", 5000)]


def test_without_a_lane_session_every_run_takes_the_model_s_own():
    batcher = Batcher(lambda s: np.array([[x[0], len(x), 0] for x in s], np.float32), 3)
    batcher.start()

    async def main():
        ticket = batcher.submit(seqs(1, [4, 4]), priority=Priority.BATCH)
        assert (await ticket.result())[:, 0].tolist() == [1000, 1001]

    run(main())
    batcher.close()
