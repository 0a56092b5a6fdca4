"""What several test folders share: vector comparisons, a free loopback port, waiting for and
stopping a server process, and a filled tiktoken cache here; tiny
random models (`tiny`, `cross_encoders`) and a fake model hub (`fake_hub`) beside it."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
from embedserve.token_encodings import rank_file

# sentence-transformers' fp32 vectors and ours agree to this cosine per text (the fidelity goal).
FP32_COSINE = 0.99999


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity, in float64."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(
    process: subprocess.Popen, url: str, log: Path, *, timeout: float = 300.0, in_a_row: int = 1
) -> None:
    """Wait until the server `process` started answers `url`/ready with 200 `in_a_row` times
    running (more than once for several workers: any of them may answer); fail with its `log`
    if it exits first or `timeout` seconds pass."""
    import httpx  # only the tests need it; bench/ imports this package too

    deadline, ready = time.monotonic() + timeout, 0
    while ready < in_a_row:
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        try:
            ready = ready + 1 if httpx.get(url + "/ready", timeout=5).status_code == 200 else 0
        except httpx.TransportError:
            ready = 0
        time.sleep(0.1)


def stop(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if `process` has not exited within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"


def fill_tiktoken_cache(folder: Path) -> Path:
    """tiktoken's own cache (for TIKTOKEN_CACHE_DIR), filled from our checked rank files under
    the names tiktoken reads (the sha1 of the download URL), so a client never downloads."""
    for name in ("cl100k_base", "o200k_base"):
        key = hashlib.sha1(TIKTOKEN_URL.format(name).encode()).hexdigest()
        shutil.copyfile(rank_file(name), folder / key)
    return folder
