"""`embedserve serve` as a subprocess on a free loopback port, for the overload and soak benches."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def status_kb(self, field: str) -> int:
        """VmRSS / VmHWM of the server process in kB (one worker: the process itself)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the ")" closing comm: state is field 0, utime 11, stime 12 (stat(5) fields 14, 15).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(
    flags: list[str],
    start_timeout: float = 180.0,
    module: str = "embedserve.cli",
    env: dict[str, str] | None = None,
) -> Iterator[Served]:
    """`python -m <module> serve` with `flags` on a free port, once its /ready says 200; stopped
    with SIGTERM afterwards. `module`: the CLI, or a bench launcher around it; `env`: the
    process's environment (this one's when None)."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="embedserve-bench-", suffix=".log")[1])
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "serve", "--port", str(port), *flags],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    served = Served(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready in {start_timeout}s")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(served.url + "/ready", timeout=5).status_code == 200:
                    break
            time.sleep(0.2)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
