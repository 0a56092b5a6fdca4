"""The output folder: Parquet parts written atomically, and a manifest that is the only truth.

    OUT/part-000000.parquet   rows [0, 32768) of the input, good rows only, in order
    OUT/part-000001.parquet   ...
    OUT/_manifest.json        options, and per part: file, row range, rows, tokens, skipped rows

A part is written under a temporary name (row group by row group, as chunks arrive), fsynced,
renamed, and only then added to the manifest, which is itself replaced atomically. Killed at any
point, a run leaves parts the manifest lists (complete) and maybe files it does not (thrown away
on resume), so the resumed run starts at the end of the last listed part and every input row
ends up in exactly one part. Readers skip names starting with '_' or '.', so
`pyarrow.parquet.read_table(OUT)` reads the parts alone, in name order.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedserve.corpus.encode import arrow_type, to_arrow
from embedserve.fileio import utf8_path

if TYPE_CHECKING:
    from typing_extensions import Self  # typing's from Python 3.11

MANIFEST = "_manifest.json"
MANIFEST_VERSION = 1
_OURS = re.compile(r"^(\.)?part-\d{6}\.parquet(\.tmp)?$|^\.?_manifest\.json\.tmp$")
# Skipped rows listed per part in the manifest; beyond this only their count is kept.
MAX_LISTED_SKIPS = 1_000


class OutputError(ValueError):
    """OUT cannot be used: it holds something else, or a run with other options."""


@dataclass
class Chunk:
    """Consecutive input rows [start, end): the embeddable ones and the skipped ones."""

    start: int
    end: int
    rows: list[int] = field(default_factory=list)
    ids: list[str | None] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    vectors: np.ndarray | None = None  # [len(rows), width] once embedded
    token_counts: np.ndarray | None = None  # [len(rows)] once embedded

    @property
    def tokens(self) -> int:
        return 0 if self.token_counts is None else int(self.token_counts.sum())

    def split(self, rows: int) -> tuple[Chunk, Chunk]:
        """The first `rows` embeddable rows (and the skipped rows before the last of them), and the rest."""
        cut = self.rows[rows - 1] + 1
        head = Chunk(
            self.start,
            cut,
            self.rows[:rows],
            self.ids[:rows],
            self.texts[:rows],
            [s for s in self.skipped if s[0] < cut],
        )
        tail = Chunk(
            cut,
            self.end,
            self.rows[rows:],
            self.ids[rows:],
            self.texts[rows:],
            [s for s in self.skipped if s[0] >= cut],
        )
        if self.vectors is not None:
            head.vectors, tail.vectors = self.vectors[:rows], self.vectors[rows:]
        if self.token_counts is not None:
            head.token_counts, tail.token_counts = (
                self.token_counts[:rows],
                self.token_counts[rows:],
            )
        return head, tail


def fsync_replace(tmp: Path, target: Path) -> None:
    """Make `tmp` durable, rename it over `target`, and make the rename durable."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, target)
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _lock_folder(directory: Path) -> int:
    """An open descriptor of `directory` holding its exclusive lock, or OutputError where
    another run holds it: a second run would delete the first's part in progress as a stray,
    and each would write parts and manifests over the other's. The lock is on the folder
    itself (no lock file is left in the output) and ends with the process, killed or not."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutputError(
            f"{directory} is in use by another embed-file run: wait for it to end, "
            "or give another --out"
        ) from None
    except OSError:
        # A filesystem that cannot lock a folder (NFS emulates flock with a write lock, which a
        # folder opened to read cannot take: EBADF; no lock daemon: ENOLCK) runs unguarded, as
        # every run did before the lock, rather than not at all.
        pass
    return fd


def part_name(index: int) -> str:
    return f"part-{index:06d}.parquet"


def schema(embedding_type: str, dimension: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("row", pa.int64(), nullable=False),
            pa.field("embedding", arrow_type(embedding_type, dimension), nullable=False),
        ]
    )


def _new_run(options: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a run that has written nothing yet."""
    return {"version": MANIFEST_VERSION, "options": options, "parts": [], "complete": False}


class Manifest:
    def __init__(self, directory: Path, options: dict[str, Any], data: dict[str, Any]) -> None:
        self.directory = directory
        self.options = options
        self.data = data
        self._lock: int | None = None

    @property
    def parts(self) -> list[dict[str, Any]]:
        return self.data["parts"]

    @property
    def next_row(self) -> int:
        return self.parts[-1]["end"] if self.parts else 0

    @property
    def complete(self) -> bool:
        return bool(self.data.get("complete"))

    @classmethod
    def check(cls, directory: Path, options: dict[str, Any]) -> dict[str, Any] | None:
        """The manifest of the run `directory` holds for `options`, or None where a new run
        starts; refused (OutputError) where it cannot be used. Writes nothing, so that it runs
        before the model loads: a wrong --out costs no load."""
        if directory.exists() and not directory.is_dir():
            raise OutputError(f"{directory} is a file: --out names a folder (new, or a run's)")
        if not utf8_path(directory):
            raise OutputError(
                f"{directory}: the name is not UTF-8, and pyarrow writes Parquet parts by UTF-8 "
                "names: give another --out"
            )
        path = directory / MANIFEST
        if path.exists():
            try:
                data = json.loads(path.read_text())
                recorded, parts = data.get("options"), data["parts"]
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise OutputError(
                    f"{path} is not a manifest this embedserve can read ({exc!r}): use another "
                    "--out, or delete it to start over"
                ) from None
            if recorded != options and not any(p["end"] > p["start"] for p in parts):
                # A run stopped before its first part (a bad row under --on-error fail, an
                # unreadable file), or one of an input of no rows (its one part is empty),
                # wrote nothing its options could be mixed with: a rerun with the input fixed,
                # or other options, starts over.
                return _new_run(options)
            if recorded != options:
                raise OutputError(
                    f"{directory} holds a run with other options ({_diff(recorded, options)});"
                    " use another --out, or delete it to start over"
                )
            return data
        if directory.exists() and any(directory.iterdir()):
            raise OutputError(
                f"{directory} exists, is not empty and holds no {MANIFEST}: "
                "give --out a new or empty folder"
            )
        return None

    @classmethod
    def open(cls, directory: Path, options: dict[str, Any]) -> Manifest:
        """Start or resume a run in `directory`; the options must be the ones it was started
        with. The run holds the folder's lock until `close`."""
        cls.check(directory, options)  # refused before anything is made
        directory.mkdir(parents=True, exist_ok=True)
        lock = _lock_folder(directory)
        try:
            # Again under the lock: the run that held it until now may have added parts.
            data = cls.check(directory, options)
            manifest = cls(directory, options, data or _new_run(options))
            if data is None:
                manifest.save()
            else:
                manifest._remove_strays()
        except BaseException:
            os.close(lock)
            raise
        manifest._lock = lock
        return manifest

    def close(self) -> None:
        """Let another run have the folder."""
        lock, self._lock = self._lock, None
        if lock is not None:
            os.close(lock)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _remove_strays(self) -> None:
        """Delete part files a killed run left behind without listing them."""
        listed = {part["file"] for part in self.parts}
        for entry in self.directory.iterdir():
            if _OURS.match(entry.name) and entry.name not in listed:
                entry.unlink()

    def add(self, part: dict[str, Any]) -> None:
        self.parts.append(part)
        self.save()

    def finish(self) -> None:
        self.data["complete"] = True
        self.save()

    def save(self) -> None:
        tmp = self.directory / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(self.data, indent=1))
        fsync_replace(tmp, self.directory / MANIFEST)

    def totals(self) -> dict[str, Any]:
        skipped = [tuple(s) for part in self.parts for s in part["skipped"]]
        return {
            "rows": sum(p["rows"] for p in self.parts),
            "tokens": sum(p["tokens"] for p in self.parts),
            "skipped": sum(p["skipped_count"] for p in self.parts),
            "skipped_rows": skipped,
            "parts": len(self.parts),
        }


def _diff(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """What differs between a run's recorded options and this run's, for the refusal."""
    old = old or {}
    changed = []
    for key in sorted(set(old) | set(new)):
        if key not in old:
            # A run started by an older embedserve lacks the options added since (a None now
            # is not the same as one not recorded).
            changed.append(f"{key}: not recorded then, {new[key]!r} now")
        elif old[key] == new.get(key):
            continue
        elif key == "inputs" and isinstance(old[key], list) and isinstance(new.get(key), list):
            changed.append(f"inputs: {_inputs_diff(old[key], new[key])}")
        else:
            changed.append(f"{key}: {old[key]!r} then, {new.get(key)!r} now")
    return "; ".join(changed)


# Input files named in a refusal; a folder of thousands that were all touched is summed up.
MAX_NAMED_INPUTS = 3


def _inputs_diff(old: list[list[Any]], new: list[list[Any]]) -> str:
    """Which input files differ: each one new, gone or changed since the run started."""
    then = {str(entry[0]): entry[1:] for entry in old}
    now = {str(entry[0]): entry[1:] for entry in new}
    notes = []
    for path in sorted(then.keys() | now.keys()):
        before, after = then.get(path), now.get(path)
        if before == after:
            continue
        if before is None:
            notes.append(f"{path} is new")
        elif after is None:
            notes.append(f"{path} is gone")
        elif before[:1] != after[:1]:
            notes.append(f"{path} changed size ({before[0]} bytes then, {after[0]} now)")
        elif len(before) < len(after):
            notes.append(f"{path} was recorded by size alone (no modification time)")
        else:
            notes.append(f"{path} was modified (same size, another modification time)")
    if len(notes) > MAX_NAMED_INPUTS:
        notes = [*notes[:MAX_NAMED_INPUTS], f"and {len(notes) - MAX_NAMED_INPUTS} more files"]
    return "; ".join(notes) or "the same files in another order"


def at_part_ends(chunks: Iterable[Chunk], rows_per_part: int) -> Iterator[Chunk]:
    """`chunks` (of one run, which starts where a part starts) cut where PartWriter will end its
    parts: after every `rows_per_part` embeddable rows. A model stage that learns only a chunk's
    total tokens (a server's `usage`) cuts its chunks here, so no chunk's tokens straddle two
    parts."""
    done = 0
    for chunk in chunks:
        while len(chunk.rows) > (room := rows_per_part - done % rows_per_part):
            head, chunk = chunk.split(room)
            done += room
            yield head
        done += len(chunk.rows)
        yield chunk


class PartWriter:
    """Chunks in, parts out: each chunk becomes a row group of the current part.

    Every part but the last holds exactly `rows_per_part` rows (chunks are split to fit), so
    the parts are the same however the rows were chunked: locally, on Ray, or across a resume
    (`rows_per_part` is in the manifest's options, so a resume cannot change it).
    """

    def __init__(
        self, manifest: Manifest, embedding_type: str, dimension: int, rows_per_part: int
    ) -> None:
        self.manifest = manifest
        self.embedding_type = embedding_type
        self.dimension = dimension
        self.rows_per_part = rows_per_part
        self.schema = schema(embedding_type, dimension)
        self._writer: pq.ParquetWriter | None = None
        self._part: dict[str, Any] | None = None

    def write(self, chunk: Chunk) -> None:
        while True:
            if self._part is None:
                self._open(chunk.start)
            room = self.rows_per_part - self._part["rows"]
            # A full part ends right after its last row: skipped rows after it open the next one.
            fits = len(chunk.rows) < room or (
                len(chunk.rows) == room and chunk.end == chunk.rows[-1] + 1
            )
            if fits:
                self._append(chunk)
                return
            head, chunk = chunk.split(room)
            self._append(head)
            if chunk.end == chunk.start:
                return

    def _append(self, chunk: Chunk) -> None:
        if self._part is None:
            self._open(chunk.start)
        part = self._part
        assert part is not None and self._writer is not None
        if chunk.start != part["end"]:
            raise RuntimeError(f"chunk starts at row {chunk.start}, expected {part['end']}")
        if chunk.rows:
            assert chunk.vectors is not None
            table = pa.Table.from_arrays(
                [
                    pa.array(chunk.ids, pa.string()),
                    pa.array(chunk.rows, pa.int64()),
                    to_arrow(chunk.vectors, self.embedding_type, self.dimension),
                ],
                schema=self.schema,
            )
            self._writer.write_table(table, row_group_size=max(len(chunk.rows), 1))
        part["end"] = chunk.end
        part["rows"] += len(chunk.rows)
        part["tokens"] += chunk.tokens
        part["skipped_count"] += len(chunk.skipped)
        room = MAX_LISTED_SKIPS - len(part["skipped"])
        part["skipped"].extend([list(s) for s in chunk.skipped[: max(room, 0)]])
        if part["rows"] >= self.rows_per_part:
            self.flush()

    def flush(self) -> None:
        """Close the current part and commit it to the manifest (no-op without one)."""
        if self._part is None or self._writer is None:
            return
        self._writer.close()
        tmp = self.manifest.directory / f".{self._part['file']}.tmp"
        fsync_replace(tmp, self.manifest.directory / self._part["file"])
        self.manifest.add(self._part)
        self._writer, self._part = None, None

    def close(self) -> None:
        """Commit the last part. A run of no input rows commits one empty part, so that
        `read_table(OUT)` reads the columns, and the embedding's type, of every other run's."""
        self.flush()
        if not self.manifest.parts:
            self._open(self.manifest.next_row)
            self.flush()

    def _open(self, start: int) -> None:
        name = part_name(len(self.manifest.parts))
        self._part = {
            "file": name,
            "start": start,
            "end": start,
            "rows": 0,
            "tokens": 0,
            "skipped_count": 0,
            "skipped": [],
        }
        self._writer = pq.ParquetWriter(
            self.manifest.directory / f".{name}.tmp",
            self.schema,
            # Vectors neither compress nor benefit from dictionaries or statistics: skip the work.
            compression={"id": "zstd", "row": "zstd", "embedding": "none"},
            use_dictionary=False,
            write_statistics=["row"],
        )

    def abort(self) -> None:
        """Drop the unfinished part (its temporary file stays until the next run removes it)."""
        if self._writer is not None:
            self._writer.close()
        self._writer, self._part = None, None
