"""Where embedserve keeps pulled models and compiled graphs, and how a cached graph is named.

Every graph pass (compile, dynamic or static int8, fp16, in-graph pooling) keys its output by the
sha256 of its input file; that key and the folder it names live here, below all of the passes,
so none of them has to import another to find its cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from embedserve.fileio import atomic_write_bytes, sha256_of


def cache_root() -> Path:
    """`$EMBEDSERVE_CACHE`, else `$XDG_CACHE_HOME/embedserve`, else `~/.cache/embedserve`."""
    explicit = os.environ.get("EMBEDSERVE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "embedserve"


def compiled_root() -> Path:
    """The folder every graph pass writes its cached graphs under."""
    return cache_root() / "compiled"


def compiled_graph(key: str) -> Path:
    """The cached graph file named `key` (it may not exist yet)."""
    return compiled_root() / key / "model.onnx"


def file_hash(weights: Path) -> str:
    """sha256 of a weights or graph file, remembered beside the compiled graphs by size and mtime."""
    stat = weights.stat()
    memo = compiled_root() / "hashes.json"
    key = f"{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    known: dict[str, str] = {}
    if memo.exists():
        try:
            known = json.loads(memo.read_text())
        except ValueError:
            known = {}
    if key not in known:
        known[key] = sha256_of(weights)
        atomic_write_bytes(memo, json.dumps(known).encode())
    return known[key]
