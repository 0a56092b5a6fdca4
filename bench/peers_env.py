"""The separate environment the sentence-transformers peers run in (`python -m bench peers --setup`).

sentence-transformers' ONNX and OpenVINO backends load through optimum-onnx / optimum-intel,
whose newest releases cannot share an environment with the test extra's sentence-transformers
6.2 / transformers 5 (bench/NOTES.md §R2.5). bench/peers-requirements.txt pins a set that
installs together; this module makes a venv from it in the cache, beside the peers' models.
"""

from __future__ import annotations

import hashlib
import subprocess
import venv
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent / "peers-requirements.txt"


def peers_root() -> Path:
    from embedserve.models.cache import cache_root

    return cache_root() / "bench-peers"


def venv_dir() -> Path:
    return peers_root() / "venv"


def peer_python() -> Path:
    return venv_dir() / "bin" / "python"


def requirements_digest() -> str:
    """Changes when the pins do: the venv and the exports made with it are then stale."""
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]


def is_ready() -> bool:
    stamp = venv_dir() / ".requirements"
    return peer_python().exists() and stamp.exists() and stamp.read_text() == requirements_digest()


def setup() -> Path:
    """Create (or bring up to date) the peers' venv; returns its python. Minutes, network."""
    if is_ready():
        print(f"peers venv up to date: {venv_dir()}", flush=True)
        return peer_python()
    print(f"creating the peers venv in {venv_dir()} from {REQUIREMENTS.name}", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir())
    subprocess.run(
        [str(peer_python()), "-m", "pip", "install", "-r", str(REQUIREMENTS)],
        check=True,
    )
    (venv_dir() / ".requirements").write_text(requirements_digest())
    return peer_python()
