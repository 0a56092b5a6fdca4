"""`idle_spin_us` (`--idle-spin-us`): how long ONNX Runtime's idle model threads spin for more
work after a run, seen as the CPU time the process burns while it waits for its next call."""

from __future__ import annotations

import resource
import time

import pytest
from embedserve.engine import Engine

# Long enough for ONNX Runtime's own spin after a run (~25 ms of a core here) to show whole.
IDLE_SECONDS = 0.3


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of the process
    return usage.ru_utime + usage.ru_stime


def idle_cpu_seconds(engine: Engine, tries: int = 3) -> list[float]:
    """The process's CPU time over IDLE_SECONDS right after one model run, per try."""
    spent = []
    for i in range(tries):
        engine.embed([f"one short text before a pause, number {i}"])
        before = _cpu_seconds()
        time.sleep(IDLE_SECONDS)
        spent.append(_cpu_seconds() - before)
    return spent


@pytest.fixture(scope="module")
def default_spin(minilm_dir) -> list[float]:
    engine = Engine.from_pretrained(minilm_dir, intra_op_threads=2, cache_bytes=0)
    return idle_cpu_seconds(engine)


@pytest.mark.parametrize("microseconds", [0, 500])
def test_idle_threads_stop_spinning_after_a_run(minilm_dir, default_spin, microseconds):
    if max(default_spin) < 0.01:
        pytest.skip(f"ONNX Runtime's threads do not spin after a run here ({default_spin} s)")
    engine = Engine.from_pretrained(
        minilm_dir, intra_op_threads=2, cache_bytes=0, idle_spin_us=microseconds
    )
    bounded = idle_cpu_seconds(engine)
    # The best of three tries: a try may catch the process's other threads (GC, the tokenizer's)
    assert min(bounded) < 0.005, (bounded, default_spin)
    assert min(bounded) < max(default_spin) / 3, (bounded, default_spin)


def test_idle_spin_is_checked_where_options_are_made(minilm_dir):
    with pytest.raises(ValueError, match="idle_spin_us must be an integer >= 0"):
        Engine.from_pretrained(minilm_dir, idle_spin_us=-1)
