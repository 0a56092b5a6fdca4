"""The one way embedserve writes files: readers see the old file or the whole new one, never half.

A temporary file in the target's folder (so the rename stays on one filesystem), fsync, then
`os.replace`; the file gets the mode a plain `open()` would give it (0o666 less the umask),
not mkstemp's 0o600, so a cache shared by several users stays readable.

Beside it, the one way a model folder's JSON files are read (`read_json`), so that a broken
one is reported by name wherever it is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_umask_lock = threading.Lock()
_umask: int | None = None


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), else once."""
    global _umask
    with _umask_lock:
        if _umask is None:
            try:
                with open("/proc/self/status", encoding="ascii") as f:
                    line = next(line for line in f if line.startswith("Umask:"))
                _umask = int(line.split()[1], 8)
            except (OSError, StopIteration, ValueError):
                # os.umask can only be read by setting it: set it back at once, under the lock.
                _umask = os.umask(0o022)
                os.umask(_umask)
        return _umask


@contextlib.contextmanager
def atomic_write_path(target: Path, *, mode: int = 0o666) -> Iterator[Path]:
    """A temporary path to write `target`'s new content to; published when the block succeeds.

    For writers that want a path (onnx.save, ONNX Runtime's quantizer). On an exception the
    temporary file is removed and `target` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    staged = Path(name)
    try:
        yield staged
        publish_file(staged, target, mode=mode)
    finally:
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()


def publish_file(staged: Path, target: Path, *, mode: int = 0o666) -> None:
    """Publish a fully written file `staged` (in `target`'s folder) as `target`: fsync, the
    umask's mode, rename, then sync the folder so the rename itself is durable."""
    _fsync_file(staged)
    os.chmod(staged, mode & ~current_umask())
    os.replace(staged, target)
    _fsync_dir(target.parent)


@contextlib.contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """A scratch folder beside `target` for writers that emit several files at once (a graph and
    its external data), to be published one by one with `publish_file`; removed afterwards with
    whatever was not published."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def atomic_write_bytes(target: Path, data: bytes, *, mode: int = 0o666) -> Path:
    """Write `data` to `target` atomically; returns `target`."""
    with atomic_write_path(target, mode=mode) as staged, staged.open("wb") as f:
        f.write(data)
    return Path(target)


def atomic_copy(source: Path, target: Path) -> Path:
    """Copy `source` to `target` atomically (streamed, for files of any size)."""
    with atomic_write_path(target) as staged, open(source, "rb") as src, staged.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return Path(target)


def utf8_path(path: Path) -> bool:
    """Whether `path`'s name is UTF-8, as pyarrow needs: Python keeps other bytes of a file
    name as lone surrogates, which pyarrow's UTF-8 encoding of the path refuses."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_json(path: Path) -> Any:
    """The JSON value in `path`, None if there is no such file.

    A file that is not UTF-8 JSON is a ValueError naming it: the bare JSONDecodeError says only
    "line 1 column 2", and a model folder has a dozen JSON files it could be about.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from exc


def replace_dir(staging: Path, target: Path) -> None:
    """Publish a fully written folder `staging` (same parent as `target`) as `target`."""
    for root, _, files in os.walk(staging):
        for name in files:
            _fsync_file(Path(root) / name)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    _fsync_dir(target.parent)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    # The rename itself is durable only once the folder is synced; not every platform allows it.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
