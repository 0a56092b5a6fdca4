"""What several test folders share: vector comparisons and a free loopback port here; tiny
random models (`tiny`, `cross_encoders`) and a fake model hub (`fake_hub`) beside it."""

from __future__ import annotations

import socket

import numpy as np

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
