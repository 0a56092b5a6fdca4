"""Thread priorities: work that must not delay the event loop runs below it.

Linux keeps a nice value per thread, and a thread inherits its creator's: lowering a thread
before it starts a pool lowers the pool too. Raising one's own nice value needs no privilege;
elsewhere (no `os.setpriority`) this is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import threading


def lower_this_thread(nice: int) -> None:
    """Add `nice` to the calling thread's nice value (Linux: per thread; elsewhere a no-op)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
