"""An exact result cache: pooled vectors by the ids the model saw, bounded by bytes.

The key is the model sequence itself (special tokens, truncation and any prompt included) and
how many leading tokens pooling skips, so two requests share an entry exactly when the model
would compute the same thing; `dimensions` and normalization apply after the cache, on a copy.
One cache per loaded model (its precision and runtime fixed), shared by every route and by the
library. A hit returns the stored vector itself, so its bytes are the miss's bytes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import numpy as np

# What one entry costs besides its key and vector: the dict slot, the key and array objects.
ENTRY_OVERHEAD = 200
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024


def cache_key(sequence: np.ndarray) -> bytes:
    skip = int(getattr(sequence, "pool_skip", 0))
    return skip.to_bytes(4, "little") + np.ascontiguousarray(sequence, dtype=np.int64).tobytes()


class VectorCache:
    """A thread-safe LRU of float32 rows; `max_bytes=0` turns it off."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, sequences: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        """Each sequence's stored row, or None; hits become the most recently used."""
        if not self.max_bytes:
            return [None] * len(sequences)
        keys = [cache_key(s) for s in sequences]
        found: list[np.ndarray | None] = []
        with self._lock:
            for key in keys:
                row = self._entries.get(key)
                if row is not None:
                    self._entries.move_to_end(key)
                found.append(row)
            hits = sum(row is not None for row in found)
            self.hits += hits
            self.misses += len(found) - hits
        return found

    def store(self, sequences: Sequence[np.ndarray], rows: np.ndarray) -> None:
        """Keep `rows[i]` for `sequences[i]`, dropping the least recently used past the budget."""
        if not self.max_bytes:
            return
        entries = [
            (cache_key(s), np.array(row, dtype=np.float32)) for s, row in zip(sequences, rows)
        ]
        with self._lock:
            for key, row in entries:
                cost = len(key) + row.nbytes + ENTRY_OVERHEAD
                if cost > self.max_bytes or key in self._entries:
                    continue
                self._entries[key] = row
                self.bytes += cost
            while self.bytes > self.max_bytes:
                key, row = self._entries.popitem(last=False)
                self.bytes -= len(key) + row.nbytes + ENTRY_OVERHEAD


class RowCache(Protocol):
    """A tier of the cache: this memory one, or the disk one (`disk_cache.DiskVectorCache`)."""

    def lookup(self, sequences: Sequence[np.ndarray]) -> list[np.ndarray | None]: ...

    def store(self, sequences: Sequence[np.ndarray], rows: np.ndarray) -> None: ...


def split_cached(
    cache: RowCache, sequences: Sequence[np.ndarray]
) -> tuple[list[np.ndarray | None], list[int]]:
    """The cached rows (None where missing) and the indices still to compute."""
    found = cache.lookup(sequences)
    return found, [i for i, row in enumerate(found) if row is None]


def merge_cached(
    cache: RowCache,
    sequences: Sequence[np.ndarray],
    found: list[np.ndarray | None],
    missing: list[int],
    computed: np.ndarray,
    width: int,
) -> np.ndarray:
    """All rows in input order: the cached ones and `computed` (the missing ones, in order),
    which are stored for next time."""
    out = np.empty((len(sequences), width), dtype=np.float32)
    for index, row in enumerate(found):
        if row is not None:
            out[index] = row
    if missing:
        out[missing] = computed
        cache.store([sequences[i] for i in missing], computed)
    return out
