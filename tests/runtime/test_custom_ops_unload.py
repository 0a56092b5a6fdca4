"""The custom-op library outlives the sessions that loaded it.

ONNX Runtime dlcloses a custom-op library when the last session (and session options) holding
it goes. The attention kernel keeps each thread's scratch under a pthread key whose destructor
is in the library, run when that thread exits: a thread that ran the kernel and exited after
the last session had gone jumped into unmapped code. A `map_on_threads` thread does that when
its engine is dropped right after the call, since `join` returns before the OS thread has run
its key destructors; the model tests once died so, faulthandler showing only the main thread
(building the next fixture's tiny model), as the crashing thread had no Python frame left.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from embedserve.runtime.custom_ops import library

pytestmark = pytest.mark.skipif(library() is None, reason="the custom-op library was not built")

ROOT = Path(__file__).resolve().parents[2]

# In a child process: a crash there is a return code here, not the end of this run.
THREAD_EXITS_AFTER_THE_LAST_SESSION = """
import gc, threading
import numpy as np
from embedserve.models.fused_attention import PADDED
from tests.runtime.test_custom_attention import _feeds, _graph, _session

session = _session(_graph(PADDED, 64, 2), 1)  # one thread: the kernel runs on the caller
feeds = _feeds(np.random.default_rng(0), [4, 2], 4, 64)
feeds["bias"] = np.zeros(3 * 64, np.float32)
ran, leave = threading.Event(), threading.Event()

def caller():
    try:
        session.run(None, feeds)
    finally:
        ran.set()
    leave.wait()

thread = threading.Thread(target=caller)
thread.start()
ran.wait()
del session
gc.collect()
mapped = any("_ortops" in line for line in open("/proc/self/maps"))
leave.set()
thread.join()
print("exited; library still mapped:", mapped)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/maps")
def test_a_thread_that_ran_the_kernel_exits_after_the_last_session() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", THREAD_EXITS_AFTER_THE_LAST_SESSION],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"rc {done.returncode}\n{done.stderr[-2000:]}"
    assert done.stdout.strip() == "exited; library still mapped: True"
