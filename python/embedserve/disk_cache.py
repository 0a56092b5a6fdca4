"""The on-disk tier of the exact result cache, for `embed-file` reruns: pooled vectors that
outlive the process, in one SQLite file in a folder the user names.

Keys are the memory cache's (`vector_cache.cache_key`: the ids the model saw and the tokens
pooling skips, so prompt and truncation are in it) under a namespace for the model that computed
them (`model_identity`: its graph and dense files, precision, runtime and CPU), hashed to 32
bytes. `dimensions` and normalization apply after the cache, as they do to the memory tier.

Why SQLite and not files written with `fileio`: a corpus has millions of chunks, one file each
would be millions of files, and SQLite already gives what a shared cache needs: a transaction
is all or nothing when the process dies mid-write (the write-ahead log), and several processes
may read and write one folder at once (its locks; a writer waits up to `BUSY_SECONDS`). The
folder must be on a local disk: SQLite's locks do not hold on network filesystems.

Bounded by bytes (`max_bytes`, over every model's entries): past it, the least recently used
entries go. A hit marks its entry used, so a rerun keeps what it reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedserve.cpu import cpu_info
from embedserve.vector_cache import cache_key

if TYPE_CHECKING:
    from typing_extensions import Self  # typing's from Python 3.11

FILE_NAME = "vectors.sqlite"
DEFAULT_DISK_CACHE_BYTES = 4 * 1024**3
# What a row costs SQLite besides its key and vector: the row header, the `used` index entry.
DISK_ENTRY_OVERHEAD = 64
BUSY_SECONDS = 60.0
# SQLite's largest page. A WITHOUT ROWID row past about 1/4 of a page spills onto overflow
# pages of its own; on 4 KiB pages a 384-dimensional row (1,568 bytes) took a 4 KiB overflow
# page, and the file grew to ~3× the budget. 64 KiB pages hold rows inline up to ~4,000
# dimensions. Set when the file is made; a file made before keeps its pages.
PAGE_SIZE = 65536
# SQLite's smallest limit on bound parameters (999 before 3.32).
_MAX_PARAMS = 900

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    key BLOB PRIMARY KEY, vector BLOB NOT NULL, size INTEGER NOT NULL, used INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS vectors_by_use ON vectors (used);
CREATE TABLE IF NOT EXISTS total (bytes INTEGER NOT NULL);
INSERT INTO total (bytes) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM total);
-- The running total changes in the same transaction as the rows, so it cannot drift.
CREATE TRIGGER IF NOT EXISTS vectors_added AFTER INSERT ON vectors
    BEGIN UPDATE total SET bytes = bytes + NEW.size; END;
CREATE TRIGGER IF NOT EXISTS vectors_removed AFTER DELETE ON vectors
    BEGIN UPDATE total SET bytes = bytes - OLD.size; END;
"""


def model_identity(engine: Any) -> dict[str, Any]:
    """What decides an engine's pooled vectors besides the ids: the graph it runs (its files by
    path, size and modification time, so a rebuilt int8 copy is another model), its dense heads,
    pooling, precision and provider, the runtime's version and this CPU (ONNX Runtime picks its
    kernels by instruction set: another CPU may round differently)."""
    session = engine.session
    graph = Path(session.path)
    files = sorted(p for p in graph.parent.iterdir() if p.name.startswith(graph.name))
    for dense in engine.config.dense_paths:
        dense = Path(dense)
        files += sorted(p for p in dense.rglob("*") if p.is_file()) if dense.is_dir() else [dense]
    model, flags = cpu_info()
    return {
        "files": [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files],
        "pooling": engine.config.pooling,
        "include_prompt": engine.config.include_prompt,
        "precision": engine.model_info.precision,
        "provider": session.provider,
        "session": type(session).__name__,
        "runtimes": {name: _version(name) for name in ("onnxruntime", "openvino")},
        "cpu": [model, sorted(flags)],
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


class DiskCacheError(RuntimeError):
    """The cache file failed under a run (damaged, the disk full, ...): the run stops with this,
    which names the file, rather than with SQLite's own error."""


class DiskVectorCache:
    """Float32 rows of one model, by `cache_key`, in `directory`; the same `lookup` and `store`
    as `VectorCache`, so `split_cached` and `merge_cached` serve both tiers. Thread-safe."""

    def __init__(
        self,
        directory: str | Path,
        identity: dict[str, Any],
        width: int,
        max_bytes: int = DEFAULT_DISK_CACHE_BYTES,
    ) -> None:
        if max_bytes < 1:
            raise ValueError(f"the disk cache needs a positive byte budget, got {max_bytes}")
        self.directory = Path(directory).expanduser()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / FILE_NAME
        self.width = width
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._namespace = hashlib.sha256(
            json.dumps(identity, sort_keys=True).encode() + width.to_bytes(4, "little")
        ).digest()
        self._lock = threading.Lock()
        # Autocommit, with explicit transactions below; one connection, used under the lock.
        self._db = sqlite3.connect(
            self.path, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False
        )
        try:
            # Only a new, empty file takes it; an existing one keeps its own.
            self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL with NORMAL: a power cut may lose the last commits, never the file's integrity.
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._transaction():
                self._create()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ValueError(f"{self.path}: not a usable embedserve disk cache ({exc})") from exc

    def _create(self) -> None:
        for statement in _statements(_SCHEMA):
            self._db.execute(statement)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    @contextlib.contextmanager
    def _failures(self) -> Iterator[None]:
        """SQLite's errors under a run as a DiskCacheError that says which file and what to do.
        Not "delete it" alone: a lock another process held past BUSY_SECONDS fails here too."""
        try:
            yield
        except sqlite3.Error as exc:
            raise DiskCacheError(
                f"{self.path}: the disk cache failed ({exc}); run again without --cache-dir "
                "(the run resumes where it stopped), and delete the file if it is damaged"
            ) from exc

    def _key(self, sequence: np.ndarray) -> bytes:
        return hashlib.sha256(self._namespace + cache_key(sequence)).digest()

    @property
    def bytes(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT bytes FROM total").fetchone()[0])

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM vectors").fetchone()[0])

    def lookup(self, sequences: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        """Each sequence's stored row, or None; hits become the most recently used."""
        keys = [self._key(s) for s in sequences]
        rows: dict[bytes, np.ndarray] = {}
        expected = self.width * 4
        with self._lock, self._failures(), self._transaction():
            for part in _parts(list(dict.fromkeys(keys))):
                marks = ",".join("?" * len(part))
                for key, blob in self._db.execute(
                    f"SELECT key, vector FROM vectors WHERE key IN ({marks})", part
                ):
                    if len(blob) == expected:  # anything else is not this model's row
                        rows[key] = np.frombuffer(blob, dtype="<f4")
            now = time.time_ns()
            for part in _parts(list(rows)):
                marks = ",".join("?" * len(part))
                self._db.execute(
                    f"UPDATE vectors SET used = ? WHERE key IN ({marks})", [now, *part]
                )
        found = [rows.get(key) for key in keys]
        hits = sum(row is not None for row in found)
        with self._lock:
            self.hits += hits
            self.misses += len(found) - hits
        return found

    def store(self, sequences: Sequence[np.ndarray], rows: np.ndarray) -> None:
        """Keep `rows[i]` for `sequences[i]`, dropping the least recently used past the budget."""
        now = time.time_ns()
        entries = []
        for sequence, row in zip(sequences, rows):
            blob = np.ascontiguousarray(row, dtype="<f4").tobytes()
            key = self._key(sequence)
            size = len(key) + len(blob) + DISK_ENTRY_OVERHEAD
            if size <= self.max_bytes:
                entries.append((key, blob, size, now))
        if not entries:
            return
        with self._lock, self._failures(), self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO vectors (key, vector, size, used) VALUES (?, ?, ?, ?)",
                entries,
            )
            self._evict()

    def _evict(self) -> None:
        (total,) = self._db.execute("SELECT bytes FROM total").fetchone()
        excess = total - self.max_bytes
        while excess > 0:
            # Oldest first, only as many as the excess needs, read a batch at a time.
            doomed = []
            for key, size in self._db.execute(
                "SELECT key, size FROM vectors ORDER BY used LIMIT 512"
            ):
                doomed.append(key)
                excess -= size
                if excess <= 0:
                    break
            for part in _parts(doomed):
                marks = ",".join("?" * len(part))
                self._db.execute(f"DELETE FROM vectors WHERE key IN ({marks})", part)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT (ROLLBACK on an error): a writer takes the lock at the start,
    so two processes never both read and then both try to upgrade to a write."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *rest: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def _statements(script: str) -> list[str]:
    """The schema's statements, one by one (executescript would commit our transaction)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    text = "\n".join(lines)
    out, current = [], []
    for piece in text.split(";"):
        current.append(piece)
        candidate = ";".join(current).strip()
        if not candidate:
            current = []
            continue
        if sqlite3.complete_statement(candidate + ";"):
            out.append(candidate)
            current = []
    return out


def _parts(keys: list[bytes]) -> list[list[bytes]]:
    return [keys[i : i + _MAX_PARAMS] for i in range(0, len(keys), _MAX_PARAMS)]
