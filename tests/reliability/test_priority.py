"""The models' threads run below the event loop (`--model-nice`), so a busy model cannot delay
the HTTP side: /health, 429s and admission (bench/NOTES.md, "Overload with a lean client"); so
do batch requests' tokenizing and rendering."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest
from embedserve.admission import Priority
from embedserve.server.config import ServerConfig
from embedserve.server.metrics import Metrics
from embedserve.server.pipeline import RequestPipeline

from .conftest import MODEL, cli_server, embed


def thread_nice_values(pid: int) -> dict[int, int]:
    """Each thread's nice value, from /proc/PID/task/TID/stat (field 19)."""
    values = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        values[int(task.name)] = int(stat[stat.rindex(")") + 2 :].split()[16])
    return values


@pytest.mark.parametrize("nice", [7, 0])
def test_model_threads_run_at_the_model_nice_value_and_the_event_loop_does_not(tmp_path, nice):
    with cli_server(tmp_path, "--model-nice", str(nice)) as server:
        answer = embed(server.url, {"model": MODEL, "input": ["one", "two"]})
        assert answer.status_code == 200, answer.text
        # Batch work is tokenized and rendered off the loop, on threads of its own.
        batch = embed(server.url, {"model": MODEL, "input": ["three"], "priority": "batch"})
        assert batch.status_code == 200, batch.text
        values = thread_nice_values(server.pid)
    assert values[server.pid] == 0  # the main thread runs the event loop
    lowered = [tid for tid, value in values.items() if value == nice and tid != server.pid]
    if nice:
        # At least the batcher and one ONNX Runtime worker; nothing else was lowered.
        assert len(lowered) >= 2, values
        assert set(values.values()) == {0, nice}, values
    else:
        assert set(values.values()) == {0}, values


def test_batch_work_off_the_loop_runs_at_the_model_nice_value():
    pipeline = RequestPipeline(ServerConfig(model_nice=7), Metrics())

    def own_nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    async def both() -> tuple[int, int]:
        batch = await pipeline.off_loop(own_nice, priority=Priority.BATCH)
        return batch, await pipeline.off_loop(own_nice)

    try:
        batch, interactive = asyncio.run(both())
    finally:
        pipeline.close()
    assert interactive == own_nice()
    assert batch == min(19, own_nice() + 7)
