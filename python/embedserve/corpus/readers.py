"""Find a corpus's files and stream their rows: (id, text) or the reason a row cannot be embedded.

Line formats (JSONL, CSV, plain text) are parsed row by row in Python so that one bad row (not
UTF-8, not JSON, no text) is reported by its number and never fails a whole block. Parquet is
read with pyarrow in batches. Every reader yields exactly one item per input row, and
`count_rows` agrees with it, so row numbers are the same on every run (resume) and every machine
(Ray) without reading twice.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from embedserve.fileio import utf8_path
from embedserve.inputs import type_phrase

FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
    ".text": "text",
}

# A folder's files and subfolders starting with these are not input (see `_walk`).
HIDDEN = (".", "_")

# (id, text, reason): text is None exactly when reason says why the row is skipped.
Row = tuple[str | None, str | None, str | None]

# The CSV module refuses fields over 128 KiB by default; documents can be longer.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class CorpusError(ValueError):
    """The corpus as a whole cannot be read (no files, unknown format, no text column)."""


@dataclass(frozen=True)
class Columns:
    text: str = "text"
    id: str | None = "id"


@dataclass(frozen=True)
class InputFile:
    path: Path
    format: str


def format_of(path: Path) -> str | None:
    return FORMATS.get(path.suffix.lower())


def find_inputs(
    spec: str | os.PathLike[str], exclude: str | os.PathLike[str] | None = None
) -> list[InputFile]:
    """The files `spec` names: one file, a directory (searched recursively, its hidden files
    left out) or a glob, in name order; none under `exclude` (the output folder, which may lie
    inside the input's: its parts are not input)."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file():
        fmt = format_of(path)
        if fmt is None:
            raise CorpusError(f"{path}: unknown format; use one of {', '.join(sorted(FORMATS))}")
        return [_checked(InputFile(path, fmt))]
    if path.is_dir():
        candidates = sorted(_walk(path))
    elif glob.has_magic(text):
        candidates = sorted(Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True))
    elif path.exists() or text == "-":
        what = "stdin is not a regular file" if text == "-" else "not a regular file"
        raise CorpusError(
            f"{text}: {what} (a pipe, socket or device): embed-file reads its input "
            "twice, counting the rows first, and again on a resume; write it to a file first"
        )
    else:
        raise CorpusError(f"{text}: no such file or directory")
    skipped = None if exclude is None else Path(exclude).expanduser().resolve()
    files = [
        _checked(InputFile(p, fmt))
        for p in candidates
        if p.is_file()
        and (fmt := format_of(p))
        and (skipped is None or not p.resolve().is_relative_to(skipped))
    ]
    if not files:
        raise CorpusError(f"{text}: no {', '.join(sorted(FORMATS))} files found")
    return files


# Byte order marks of the encodings Windows tools save as "Unicode" (UTF-32's first: its
# little-endian mark starts with UTF-16's).
_OTHER_BOMS = {
    b"\xff\xfe\x00\x00": "UTF-32",
    b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}


# How much of a JSONL or text file is looked at for classic Mac line ends.
_LINE_END_PROBE = 1 << 16


def _checked(file: InputFile) -> InputFile:
    """`file`, or CorpusError where a line format's bytes would be split into the wrong rows
    rather than fail: read as UTF-8 and split at b"\\n", a file that starts with a UTF-16 or
    UTF-32 byte order mark decodes into NUL-laced lines that get embedded, and one whose lines
    end in a lone \\r (classic Mac OS) is one row. (The csv module ends records at \\r too.)"""
    if file.format == "parquet":
        if not utf8_path(file.path):
            raise CorpusError(
                f"{file.path}: the name is not UTF-8, and pyarrow opens Parquet files by UTF-8 "
                "names: rename it"
            )
        return file
    with open(file.path, "rb") as f:
        start = f.read(_LINE_END_PROBE)
    for mark, encoding in _OTHER_BOMS.items():
        if start.startswith(mark):
            raise CorpusError(
                f"{file.path}: the file is {encoding} (it starts with that byte order mark); "
                f"its text is read as UTF-8: convert it, e.g. `iconv -f {encoding} -t UTF-8`"
            )
    if file.format != "csv" and b"\r" in start and b"\n" not in start:
        raise CorpusError(
            f"{file.path}: its lines end in a lone CR (\\r, classic Mac OS); lines are read "
            "up to \\n or \\r\\n: convert it, e.g. `tr '\\r' '\\n'`"
        )
    return file


def _walk(folder: Path) -> Iterator[Path]:
    """Every file under `folder` but hidden ones: names starting with '.' or '_', files or
    folders, as pyarrow's datasets skip them (notebook checkpoints, macOS's `._x` AppleDouble
    files, a job's `_temporary` folder) and as `read_table(OUT)` skips our manifest."""
    for root, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(HIDDEN)]
        yield from (Path(root, name) for name in names if not name.startswith(HIDDEN))


def count_rows(file: InputFile) -> int:
    """Rows `read_rows` will yield for `file`, without parsing them (except CSV's quoting)."""
    if file.format == "parquet":
        import pyarrow.parquet as pq

        with _parquet_errors(file.path):
            return pq.ParquetFile(file.path).metadata.num_rows
    if file.format == "csv":
        return _count_csv(file.path)
    lines, last = 0, b"\n"
    with open(file.path, "rb") as f:
        while block := f.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def _count_csv(path: Path) -> int:
    """The CSV's rows past its header. A quote the file never closes (`"12 inch screen`) makes
    the csv module read on, later rows and all, into one field: every record over several lines
    must be well-formed CSV, or the file is refused here, before any row is embedded. (A record
    on one line reads as it does, however sloppy its quotes: it takes nothing from the next.)"""
    records, lines = 0, []
    with _open_csv(path) as f:

        def kept() -> Iterator[str]:
            for line in f:
                lines.append(line)
                yield line

        reader = csv.reader(kept())
        while True:
            lines.clear()
            start = reader.line_num
            if next(reader, None) is None:
                break
            records += 1
            if len(lines) > 1:
                _check_record(path, start + 1, lines)
    return max(records - 1, 0)


def _check_record(path: Path, line: int, lines: list[str]) -> None:
    try:
        for _ in csv.reader(lines, strict=True):
            pass
    except csv.Error as exc:
        raise CorpusError(
            f"{path}: line {line}: a quoted field runs over {len(lines)} lines and is not "
            f"well-formed CSV ({exc}): a quote never closed takes the rows after it; close it, "
            'or double it ("") to keep it as text'
        ) from None


def _open_csv(path: Path) -> IO[str]:
    # surrogateescape keeps undecodable bytes as lone surrogates: _check_text reports the row;
    # utf-8-sig drops a leading BOM, which would otherwise rename the first column.
    return open(path, newline="", encoding="utf-8-sig", errors="surrogateescape")


def read_rows(file: InputFile, columns: Columns, skip: int = 0) -> Iterator[Row | None]:
    """One item per row of `file`: None for the first `skip` rows (not parsed), then a `Row`."""
    readers = {"jsonl": _jsonl, "text": _text, "csv": _csv, "parquet": _parquet}
    return readers[file.format](file.path, columns, skip)


def where(file: InputFile, row: int) -> str:
    """Row `row` (from 0) of `file` as a user finds it: the line an editor shows (a CSV's
    header and its records over several lines counted), or for Parquet, which has no lines,
    the row from 0 as pyarrow and pandas number it. The one wording of a file's row in errors."""
    if file.format == "parquet":
        return f"{file.path}, row {row} of the file, counting from 0"
    line = _csv_line(file.path, row) if file.format == "csv" else row + 1
    return f"{file.path}, line {line}"


def _csv_line(path: Path, row: int) -> int:
    """The line where the CSV's record `row` (past the header) starts: the file is read again
    to it, once, for an error (records may span lines, so the row alone does not tell it)."""
    with _open_csv(path) as f:
        reader = csv.reader(f)
        for _ in range(row + 1):  # the header, then the records before it
            next(reader, None)
        return reader.line_num + 1


# Windows tools (Notepad, Excel's "CSV UTF-8") start a file with it: not part of the first row.
BOM = b"\xef\xbb\xbf"


def _lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        first = True
        for line in f:
            if first:
                line, first = line.removeprefix(BOM), False
            yield line.rstrip(b"\n").rstrip(b"\r")


def _decode(raw: bytes) -> tuple[str | None, str | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, f"not valid UTF-8 (byte {exc.start})"


# A text field a row lacks (a JSON object without it, a CSV record cut short), told apart from
# one that holds null: the user looks for the one or the other.
ABSENT = object()

# JSON's names for what a JSONL line holds, in the words of the file (not Python's "NoneType").
_JSON_TYPES = {
    type(None): "null",
    bool: "true or false",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "an array",
}


def _check_text(value: object, column: str) -> tuple[str | None, str | None]:
    if value is ABSENT:
        return None, f"no {column!r} field"
    if value is None:
        return None, f"{column!r} is null"
    if not isinstance(value, str):
        return None, f"{column!r} is {type_phrase(value)}, not a string"
    if not value.strip():
        return None, "empty text"
    try:
        # JSON escapes and surrogate-escaped CSV bytes can hold lone surrogates: not UTF-8 text.
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return None, f"not valid UTF-8 (character {exc.start})"
    return value, None


def _id(value: object) -> str | None:
    """The output's string id: a number as written, JSON's true/false, objects and lists as
    JSON, bytes as UTF-8 (not Python's spellings "True", "{'a': 1}", "b'k1'")."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (bool, dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _text(path: Path, columns: Columns, skip: int) -> Iterator[Row | None]:
    for number, raw in enumerate(_lines(path)):
        if number < skip:
            yield None
            continue
        text, reason = _decode(raw)
        if text is not None:
            text, reason = _check_text(text, columns.text)
        yield None, text, reason


def _jsonl(path: Path, columns: Columns, skip: int) -> Iterator[Row | None]:
    for number, raw in enumerate(_lines(path)):
        if number < skip:
            yield None
            continue
        line, reason = _decode(raw)
        if line is None:
            yield None, None, reason
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            yield None, None, f"not valid JSON ({exc.msg})" if line.strip() else "empty line"
            continue
        if not isinstance(record, dict):
            yield None, None, f"not a JSON object ({_JSON_TYPES[type(record)]})"
            continue
        text, reason = _check_text(record.get(columns.text, ABSENT), columns.text)
        yield _id(record.get(columns.id)) if columns.id else None, text, reason


def _csv(path: Path, columns: Columns, skip: int) -> Iterator[Row | None]:
    with _open_csv(path) as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return
        if columns.text not in header:
            raise CorpusError(f"{path}: no column {columns.text!r} (columns: {', '.join(header)})")
        text_at = header.index(columns.text)
        id_at = header.index(columns.id) if columns.id in header else None
        for number, record in enumerate(reader):
            if number < skip:
                yield None
                continue
            value = record[text_at] if text_at < len(record) else ABSENT
            text, reason = _check_text(value, columns.text)
            ident = record[id_at] if id_at is not None and id_at < len(record) else None
            if ident is not None:  # an id is kept even when not UTF-8: bad bytes become U+FFFD
                ident = ident.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            yield ident, text, reason


@contextlib.contextmanager
def _parquet_errors(path: Path) -> Iterator[None]:
    """pyarrow's errors ("Parquet magic bytes not found in footer") as one that names the file."""
    import pyarrow as pa

    try:
        yield
    except pa.ArrowException as exc:
        raise CorpusError(f"{path}: not a readable Parquet file ({exc})") from exc


def _parquet(path: Path, columns: Columns, skip: int) -> Iterator[Row | None]:
    with _parquet_errors(path):
        yield from _parquet_rows(path, columns, skip)


def _parquet_rows(path: Path, columns: Columns, skip: int) -> Iterator[Row | None]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    if columns.text not in names:
        raise CorpusError(f"{path}: no column {columns.text!r} (columns: {', '.join(names)})")
    id_column = columns.id if columns.id in names else None
    seen = 0
    # Leading row groups wholly before `skip` are passed over from the footer, unread.
    groups = []
    for index in range(parquet.num_row_groups):
        rows = parquet.metadata.row_group(index).num_rows
        if not groups and seen + rows <= skip:
            seen += rows
            yield from (None for _ in range(rows))
        else:
            groups.append(index)
    # By name, and once: the id column may be the text column itself.
    wanted = list(dict.fromkeys([columns.text, id_column] if id_column else [columns.text]))
    for batch in parquet.iter_batches(batch_size=4096, row_groups=groups, columns=wanted):
        texts = batch.column(columns.text).to_pylist()
        ids = batch.column(id_column).to_pylist() if id_column else [None] * len(texts)
        for value, ident in zip(texts, ids):
            if seen < skip:
                seen += 1
                yield None
                continue
            seen += 1
            if isinstance(value, bytes):
                value, reason = _decode(value)
                if value is None:
                    yield _id(ident), None, reason
                    continue
            text, reason = _check_text(value, columns.text)
            yield _id(ident), text, reason
