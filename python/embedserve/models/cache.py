"""Where embedserve keeps pulled models and compiled graphs, and how a cached graph is named.

Every graph pass (compile, dynamic or static int8, fp16, in-graph pooling) keys its output by the
sha256 of its input file; that key and the folder it names live here, below all of the passes,
so none of them has to import another to find its cache.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from embedserve.fileio import atomic_write_bytes, sha256_of
from embedserve.models.graph_file import onnx_file_is_whole

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """`$EMBEDSERVE_CACHE`, else `$XDG_CACHE_HOME/embedserve`, else `~/.cache/embedserve`: a
    folder, or ValueError naming where it came from (a file there failed later as "Not a
    directory: '.../models'", or made `models` list every model as not cached)."""
    explicit = os.environ.get("EMBEDSERVE_CACHE")
    xdg = os.environ.get("XDG_CACHE_HOME")
    if explicit:
        root, source = Path(explicit).expanduser(), f"EMBEDSERVE_CACHE={explicit}"
    elif xdg:
        root = Path(xdg).expanduser() / "embedserve"
        source = f"{root} (from XDG_CACHE_HOME)"
    else:
        root = Path.home() / ".cache" / "embedserve"
        source = str(root)
    if root.exists() and not root.is_dir():
        raise ValueError(f"{source} is a file: the cache is a folder (new, or one embedserve made)")
    return root


def compiled_root() -> Path:
    """The folder every graph pass writes its cached graphs under."""
    return cache_root() / "compiled"


def compiled_graph(key: str) -> Path:
    """The cached graph file named `key` (it may not exist yet).

    embedserve writes these atomically, so one that is not whole was damaged from outside (cut
    short by a full disk or another tool); it is removed, with a warning, so the pass asking
    for it builds it again rather than every later load failing on a protobuf parse error.
    """
    target = compiled_root() / key / "model.onnx"
    if target.is_file() and not onnx_file_is_whole(target):
        log.warning("%s is damaged (cut short?); removing it to build it again", target)
        target.unlink(missing_ok=True)
    return target


# The memo keeps this many of the newest entries whose files are still there unchanged; entries
# for files since deleted or rewritten (temporary folders, re-saved checkpoints) are dropped.
MEMO_ENTRIES = 1_000


def file_hash(weights: Path) -> str:
    """sha256 of a weights or graph file, remembered beside the compiled graphs by size and mtime."""
    stat = weights.stat()
    memo = compiled_root() / "hashes.json"
    key = _memo_key(weights.resolve(), stat.st_size, stat.st_mtime_ns)
    known: dict[str, str] = {}
    if memo.exists():
        try:
            known = json.loads(memo.read_text())
        except ValueError:
            known = {}
    if key not in known:
        digest = sha256_of(weights)
        kept = [(k, v) for k, v in known.items() if _still_current(k)][-(MEMO_ENTRIES - 1) :]
        known = dict([*kept, (key, digest)])
        atomic_write_bytes(memo, json.dumps(known).encode())
    return known[key]


def _memo_key(path: Path | str, size: int, mtime_ns: int) -> str:
    return f"{path}:{size}:{mtime_ns}"


def _still_current(key: str) -> bool:
    """Whether a memo entry's file is still there with the size and mtime it was hashed at."""
    path, _, _ = key.rsplit(":", 2)
    try:
        stat = os.stat(path)
    except OSError:
        return False
    return key == _memo_key(path, stat.st_size, stat.st_mtime_ns)
