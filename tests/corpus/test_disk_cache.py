"""The disk tier of the result cache (`embed-file --cache-dir`): a rerun reads unchanged rows
from it, the output is the same bytes with it or without, and the file survives a SIGKILL
mid-write and two processes writing at once."""

from __future__ import annotations

import contextlib
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from embedserve.corpus import EmbedFileOptions, embed_file
from embedserve.disk_cache import FILE_NAME, DiskVectorCache, model_identity
from embedserve.engine import Engine
from embedserve.inputs import Inputs

from tests.corpus.conftest import write_jsonl

WIDTH = 8
IDENTITY = {"model": "test"}


@pytest.fixture(scope="module")
def uncached(minilm_dir: Path) -> Engine:
    """An engine without the memory tier, so every miss of the disk tier reaches the model."""
    return Engine.from_pretrained(minilm_dir, providers="cpu", cache_bytes=0)


def _records(reference, count: int, seed: int) -> list[dict]:
    """`count` rows of reference prose, 30 % of them repeats of earlier rows."""
    words = " ".join(reference["texts"]).split()
    rng = random.Random(seed)
    records: list[dict] = []
    for i in range(count):
        if records and rng.random() < 0.3:
            text = rng.choice(records)["text"]
        else:
            start = rng.randrange(len(words) - 30)
            text = " ".join(words[start : start + rng.randint(3, 25)])
        records.append({"id": f"r{i}", "text": text})
    return records


def _options(cache_dir: Path | None) -> EmbedFileOptions:
    return EmbedFileOptions(batch_texts=16, rows_per_part=40, quiet=True, cache_dir=cache_dir)


def _parts(out: Path) -> list[bytes]:
    """Each part's table, as the bytes of its columns (the Parquet files hold timestamps)."""
    tables = [pq.read_table(p) for p in sorted(out.glob("part-*.parquet"))]
    assert tables
    return [
        b"".join(
            buf.to_pybytes()
            for column in t.columns
            for chunk in column.chunks
            for buf in chunk.buffers()
            if buf is not None
        )
        for t in tables
    ]


def test_a_hit_is_the_bytes_the_miss_computed(uncached, reference, tmp_path):
    sequences = uncached.prepare(Inputs(texts=reference["texts"][:24])).sequences
    computed = uncached.pooled(sequences)
    with DiskVectorCache(tmp_path, model_identity(uncached), computed.shape[1]) as disk:
        assert disk.lookup(sequences) == [None] * 24
        disk.store(sequences, computed)
    # A new connection, as a rerun in another process opens it.
    with DiskVectorCache(tmp_path, model_identity(uncached), computed.shape[1]) as disk:
        found = disk.lookup(sequences)
        assert disk.hits == 24 and disk.misses == 0
    assert np.stack(found).tobytes() == computed.tobytes()
    # Another precision (or graph, runtime, CPU) is another namespace: no hit.
    other = {**model_identity(uncached), "precision": "int8"}
    with DiskVectorCache(tmp_path, other, computed.shape[1]) as disk:
        assert disk.lookup(sequences) == [None] * 24


def test_a_rerun_reads_unchanged_rows_and_writes_the_same_output(uncached, reference, tmp_path):
    first = _records(reference, 160, seed=1)
    cache = tmp_path / "cache"
    corpus = write_jsonl(tmp_path / "first.jsonl", first)
    lines: list[str] = []
    totals = embed_file(corpus, tmp_path / "a", _options(cache), engine=uncached, log=lines.append)
    distinct = len({r["text"] for r in first})
    # Repeats in later chunks are hits already in the first run.
    assert totals["cache_misses"] + totals["cache_hits"] == 160
    assert distinct <= totals["cache_misses"] < 160
    # The rerun: 10 rows edited, 8 appended; the rest must come from the disk.
    second = [dict(r) for r in first]
    for i in range(5, 160, 16):
        second[i]["text"] += " (edited)"
    second += _records(reference, 8, seed=2)
    corpus = write_jsonl(tmp_path / "second.jsonl", second)
    lines.clear()
    totals = embed_file(corpus, tmp_path / "b", _options(cache), engine=uncached, log=lines.append)
    new_texts = {r["text"] for r in second} - {r["text"] for r in first}
    assert totals["cache_misses"] <= len(new_texts) + 8
    assert totals["cache_hits"] >= 160 - 10
    assert f"{totals['cache_hits']:,} hits, {totals['cache_misses']:,} misses" in lines[-1]
    # Without the cache, the same corpus gives the same bytes.
    plain = embed_file(corpus, tmp_path / "c", _options(None), engine=uncached, log=None)
    assert "cache_hits" not in plain
    assert _parts(tmp_path / "b") == _parts(tmp_path / "c")


def test_an_embedder_of_its_own_refuses_a_cache_dir(tmp_path, reference):
    """The Ray integration passes its own model stage, which the disk tier does not wrap."""
    corpus = write_jsonl(tmp_path / "c.jsonl", _records(reference, 4, seed=3))
    with pytest.raises(ValueError, match="in-process model only"):
        embed_file(corpus, tmp_path / "o", _options(tmp_path), embedder=lambda s: iter(()))


def _rows(count: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    sequences = [rng.integers(0, 30_000, size=int(rng.integers(2, 40))) for _ in range(count)]
    return sequences, rng.standard_normal((count, WIDTH)).astype(np.float32)


def _check_consistent(folder: Path) -> int:
    """The file passes SQLite's integrity check, its running total is the sum of its rows, and
    every row is a whole vector. Returns the number of rows."""
    with contextlib.closing(sqlite3.connect(folder / FILE_NAME)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        (total,) = db.execute("SELECT bytes FROM total").fetchone()
        (summed, count) = db.execute(
            "SELECT coalesce(sum(size), 0), count(*) FROM vectors"
        ).fetchone()
        assert total == summed
        sizes = {len(v) for (v,) in db.execute("SELECT vector FROM vectors")}
        assert sizes <= {WIDTH * 4}
    return count


def test_the_bound_drops_the_least_recently_used(tmp_path):
    sequences, rows = _rows(200, seed=0)
    entry = 32 + WIDTH * 4 + 64
    with DiskVectorCache(tmp_path, IDENTITY, WIDTH, max_bytes=100 * entry) as disk:
        disk.store(sequences[:100], rows[:100])
        assert len(disk) == 100 and disk.bytes == 100 * entry
        time.sleep(0.001)
        disk.lookup(sequences[:10])  # used again: these outlive the other 90 old ones
        time.sleep(0.001)
        for start in range(100, 190, 30):
            disk.store(sequences[start : start + 30], rows[start : start + 30])
            assert disk.bytes <= disk.max_bytes
        found = disk.lookup(sequences)
    kept = [i for i, row in enumerate(found) if row is not None]
    assert kept == [*range(10), *range(100, 190)]
    for i in kept:
        assert found[i].tobytes() == rows[i].tobytes()
    assert _check_consistent(tmp_path) == 100


_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from embedserve.disk_cache import DiskVectorCache
    folder, seed, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(seed)
    with DiskVectorCache(folder, {"model": "test"}, 8, max_bytes=%d) as disk:
        print("open", flush=True)
        stored, evicting = set(), False
        for _ in range(rounds):
            # Half the ids are shared by every writer: the same keys written at once.
            ids = [rng.integers(0, 2 if i %% 2 else 30_000, size=5) for i in range(64)]
            rows = np.stack([np.full(8, float(row.sum()), np.float32) for row in ids])
            disk.store(ids, rows)
            for row, ids_ in zip(disk.lookup(ids), ids):
                assert row is None or row[0] == float(ids_.sum()), "a wrong row"
            stored.update(ids_.tobytes() for ids_ in ids)
            if not evicting and len(disk) < len(stored):  # some were dropped for the bound
                evicting = True
                print("evicting", flush=True)
    """
)


def _writer(folder: Path, seed: int, rounds: int, max_bytes: int) -> subprocess.Popen:
    code = _WRITER % max_bytes
    return subprocess.Popen(
        [sys.executable, "-c", code, str(folder), str(seed), str(rounds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_share_one_folder(tmp_path):
    writers = [_writer(tmp_path, seed, 40, 200_000) for seed in (1, 2)]
    for w in writers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
    count = _check_consistent(tmp_path)
    assert 0 < count and count * (32 + 32 + 64) <= 200_000


def test_a_kill_mid_write_leaves_a_usable_cache(tmp_path):
    writer = _writer(tmp_path, 3, 100_000, 150_000)
    assert writer.stdout.readline() == "open\n"
    # Well into the writes, evictions included, on any machine: the kill lands in a later one.
    assert writer.stdout.readline() == "evicting\n", writer.stderr.read()
    writer.send_signal(signal.SIGKILL)
    writer.communicate(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    assert _check_consistent(tmp_path) > 0
    sequences, rows = _rows(20, seed=9)
    with DiskVectorCache(tmp_path, IDENTITY, WIDTH, max_bytes=150_000) as disk:
        disk.store(sequences, rows)
        assert np.stack(disk.lookup(sequences)).tobytes() == rows.tobytes()


def test_a_damaged_file_stops_the_run_with_a_clear_error(uncached, reference, tmp_path):
    """A cache file damaged past its first pages opens (they hold the schema and the running
    total) and fails when a run reads a row: the run names the file and says what to do,
    instead of SQLite's bare 'database disk image is malformed' traceback."""
    records = _records(reference, 600, seed=4)
    corpus = write_jsonl(tmp_path / "c.jsonl", records)
    cache = tmp_path / "cache"
    # The corpus's rows, stored as a first run would (their values do not matter here).
    sequences = uncached.prepare(Inputs(texts=[r["text"] for r in records])).sequences
    width = uncached.model_info.dimension
    with DiskVectorCache(cache, model_identity(uncached), width) as disk:
        disk.store(sequences, np.ones((len(sequences), width), np.float32))
    path = cache / FILE_NAME
    with contextlib.closing(sqlite3.connect(path)) as db:
        (page,) = db.execute("PRAGMA page_size").fetchone()
        (pages,) = db.execute("PRAGMA page_count").fetchone()
    assert pages > 8  # the rows' pages lie past the schema's and the running total's
    with open(path, "r+b") as f:  # the rows' pages zeroed, the file's size unchanged
        f.seek(6 * page)
        f.write(bytes((pages - 6) * page))
    with pytest.raises(RuntimeError, match="the disk cache failed") as failed:
        embed_file(corpus, tmp_path / "b", _options(cache), engine=uncached, log=None)
    assert str(path) in str(failed.value) and "without --cache-dir" in str(failed.value)
    assert isinstance(failed.value.__cause__, sqlite3.DatabaseError)


def test_the_file_stays_near_its_budget_for_small_vectors(tmp_path):
    """384-dimensional rows (1,568 bytes with their key) spilled onto a 4 KiB overflow page each
    on SQLite's default pages: the file was ~3× the bytes the budget counts."""
    width, count = 384, 2000
    rng = np.random.default_rng(5)
    sequences = [rng.integers(0, 30_000, size=12) for _ in range(count)]
    rows = rng.standard_normal((count, width)).astype(np.float32)
    with DiskVectorCache(tmp_path, IDENTITY, width) as disk:
        for start in range(0, count, 250):
            disk.store(sequences[start : start + 250], rows[start : start + 250])
        counted = disk.bytes
    # Closing the last connection folds the write-ahead log into the file.
    assert not (tmp_path / (FILE_NAME + "-wal")).exists()
    assert (tmp_path / FILE_NAME).stat().st_size < 1.5 * counted
