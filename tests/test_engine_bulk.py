"""Bulk calls: many micro-batches run on a one-thread session from several threads at once."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from embedserve.engine import Engine
from embedserve.loading import LoadOptions
from embedserve.planning import (
    LANE_AUTO_MAX_BYTES,
    bulk_batch_tokens,
    bulk_workers,
    goes_wide,
    plan_batches,
)

from .support import FP32_COSINE, cosines


def _engine(minilm_dir, mode: str, threads: int = 2) -> Engine:
    return Engine.from_pretrained(
        minilm_dir, intra_op_threads=threads, bulk_session=mode, cache_bytes=0
    )


@pytest.fixture(scope="module")
def sequential(minilm_dir) -> Engine:
    return _engine(minilm_dir, "off")


@pytest.fixture
def wide(minilm_dir) -> Engine:
    return _engine(minilm_dir, "on")


@pytest.fixture(scope="module")
def mixed(reference) -> list[str]:
    """The reference texts (2 to 256 tokens), shuffled, so input order is not length order."""
    texts = reference["texts"]
    order = np.random.default_rng(7).permutation(len(texts))
    return [texts[i] for i in order]


def spy_on(engine: Engine) -> list[int]:
    """Thread ids of every run of `engine`'s session, in the order they start."""
    calls: list[int] = []
    run = engine.session.run

    def spied(*arrays: np.ndarray) -> np.ndarray:
        calls.append(threading.get_ident())
        return run(*arrays)

    engine.session.run = spied  # type: ignore[method-assign]
    return calls


def test_a_bulk_call_runs_two_batches_at_once_on_one_thread_and_keeps_every_vector(
    wide, sequential, mixed, reference
):
    bulk = wide.bulk_engine()
    assert bulk is not None and bulk.session.threads == 1 and wide.session.threads == 2
    assert bulk.session is not wide.session and bulk.tokenizer is wide.tokenizer
    assert wide.bulk_engine() is bulk  # opened once
    # Two runs in flight at once, or the barrier breaks (its timeout only guards a hang).
    both = threading.Barrier(2, timeout=30)
    run, starts = bulk.session.run, []

    def two_at_once(*arrays: np.ndarray) -> np.ndarray:
        starts.append(threading.get_ident())
        if len(starts) <= 2:
            both.wait()
        return run(*arrays)

    bulk.session.run = two_at_once  # type: ignore[method-assign]
    model_runs = spy_on(wide)

    got = wide.embed(mixed).embeddings

    assert model_runs == [] and len(starts) > 4
    assert threading.get_ident() not in starts and len(set(starts)) == 2
    # The same MLAS kernels on one thread: the same bits as one batch after another on two.
    np.testing.assert_array_equal(got, sequential.embed(mixed).embeddings)
    by_text = dict(zip(reference["texts"], reference["normalized"]))
    assert cosines(got, np.stack([by_text[t] for t in mixed])).min() >= FP32_COSINE


def test_a_failing_run_reaches_the_caller_and_leaves_no_thread(wide, mixed):
    bulk = wide.bulk_engine()
    run, calls = bulk.session.run, []

    def third_fails(*arrays: np.ndarray) -> np.ndarray:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("the third batch broke")
        return run(*arrays)

    bulk.session.run = third_fails  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="the third batch broke"):
        wide.embed(mixed)
    assert not [t for t in threading.enumerate() if t.name.startswith("embedserve-fanout")]
    bulk.session.run = run  # type: ignore[method-assign]
    assert wide.embed(mixed[:40]).embeddings.shape == (40, 384)


@pytest.mark.parametrize("texts", [["one short text"], ["a few", "short texts", "in one batch"]])
def test_a_call_of_one_batch_stays_on_the_model_s_session(wide, mixed, texts):
    model_runs = spy_on(wide)
    bulk_runs = spy_on(wide.bulk_engine())
    wide.embed(texts)
    assert model_runs == [threading.get_ident()] and bulk_runs == []
    # A few batches, too few for two threads, one after another on the model's session too.
    few = mixed[:3]
    lengths = np.array([len(s) for s in wide.prepare(few).sequences])
    assert not goes_wide(plan_batches(lengths, bulk_batch_tokens(wide.max_batch_tokens)), 2)
    wide.embed(few)
    assert bulk_runs == [] and set(model_runs) == {threading.get_ident()}


def test_off_one_thread_or_a_large_graph_open_no_bulk_session(minilm_dir, sequential):
    assert sequential.bulk_workers == 0 and sequential.bulk_engine() is None
    assert _engine(minilm_dir, "auto", threads=1).bulk_engine() is None
    assert _engine(minilm_dir, "auto").bulk_workers == 2
    assert bulk_workers(2, "auto", LANE_AUTO_MAX_BYTES + 1) == 0
    assert bulk_workers(5, "auto") == 0 and bulk_workers(5, "on") == 5
    with pytest.raises(ValueError, match="bulk_session must be one of"):
        LoadOptions(bulk_session="sometimes")
