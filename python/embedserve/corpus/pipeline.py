"""`embed_file`: read and tokenize on one thread, the model on another, write on the caller's,
through small queues.

The stages overlap: while the model runs a batch (ONNX Runtime releases the GIL), the next
batch is being read and tokenized (`tokenizers` releases it too) and the previous one written.
Each queue holds two chunks at most, so memory does not grow with the corpus.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from embedserve.corpus.encode import EMBEDDING_TYPES
from embedserve.corpus.output import Chunk, Manifest, PartWriter
from embedserve.corpus.progress import Progress, summary
from embedserve.corpus.readers import (
    Columns,
    CorpusError,
    InputFile,
    count_rows,
    find_inputs,
    read_rows,
    where,
)
from embedserve.disk_cache import DEFAULT_DISK_CACHE_BYTES, DiskVectorCache, model_identity
from embedserve.loading import LoadOptions, choose_precision
from embedserve.models import DEFAULT_MODEL
from embedserve.precision import AUTO
from embedserve.quantization import BYTE_ENCODINGS, BYTE_RULE, quantize
from embedserve.vector_cache import merge_cached, split_cached

T = TypeVar("T")

ON_ERROR = ("skip", "fail")

# The load settings that decide what a row's vector is, so a resume must share them (they are in
# the manifest's options): which graph runs (`precision` picks the graph; `compile` builds it from
# the safetensors instead of the shipped one; `runtime`: ONNX Runtime and OpenVINO run even the
# same graph with their own kernels, int8 ones above all) and on which token ids (`tokenizer`,
# another folder's tokenizer.json; `tokenizer_mode`, how it is read; `max_length`, where texts
# are cut).
MODEL_SETTINGS = ("precision", "runtime", "compile", "tokenizer", "tokenizer_mode", "max_length")
# The rest decide where and how fast that graph runs on those ids, and a resume may change them
# (another machine, more threads): `providers` (CPU or CUDA: the same graph at the recorded
# precision, rounding apart, as between two CPUs), the thread counts, `idle_spin_us`,
# `max_batch_tokens` and `bulk_session` (how rows are batched: pooling is per row), `cache_bytes`
# (the exact result cache returns the bytes it stored), `quantize` (folded into `precision`),
# `name` (a label) and `rerank_instruction` (rerankers only). tests/corpus/test_fingerprint.py
# checks that every LoadOptions field is in one list or the other.
RUN_SETTINGS = (
    "providers",
    "intra_op_threads",
    "inter_op_threads",
    "idle_spin_us",
    "max_batch_tokens",
    "bulk_session",
    "cache_bytes",
    "quantize",
    "name",
    "rerank_instruction",
)


@dataclass(frozen=True)
class EmbedFileOptions:
    model: str = DEFAULT_MODEL
    text_column: str = "text"
    id_column: str | None = "id"
    dimensions: int | None = None
    embedding_type: str = "float32"
    batch_texts: int = 1024
    rows_per_part: int = 32_768
    on_error: str = "skip"
    quiet: bool = False
    # The on-disk tier of the result cache (disk_cache.py): a folder, or None for none. Not part
    # of the fingerprint: the output is the same bytes with it or without.
    cache_dir: str | Path | None = None
    cache_dir_bytes: int = DEFAULT_DISK_CACHE_BYTES
    # How the model loads. Its precision is pinned (fp32 unless asked) rather than left to the
    # machine, so a run resumed elsewhere, or on a GPU (fp16 by default), cannot mix precisions.
    load: LoadOptions = field(default_factory=LoadOptions)

    def __post_init__(self) -> None:
        if self.load.precision is None:
            object.__setattr__(self, "load", replace(self.load, precision="fp32"))
        elif self.load.precision == AUTO:
            # Chosen here, by the rule the model's plan follows (on CUDA the GPU's default,
            # else this CPU's), so the manifest records what runs: a resume on a machine that
            # would choose otherwise is refused rather than mixing precisions.
            from embedserve.engine import Engine

            precision = choose_precision(self.load, Engine.runs).name
            object.__setattr__(self, "load", replace(self.load, precision=precision))
        if self.embedding_type not in EMBEDDING_TYPES:
            raise ValueError(
                f"embedding type must be one of {', '.join(EMBEDDING_TYPES)}, "
                f"got {self.embedding_type!r}"
            )
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error must be skip or fail, got {self.on_error!r}")
        if self.batch_texts < 1 or self.rows_per_part < 1:
            raise ValueError("batch_texts and rows_per_part must be at least 1")
        if self.cache_dir_bytes < 1:
            raise ValueError(f"cache_dir_bytes must be at least 1, got {self.cache_dir_bytes}")

    @property
    def columns(self) -> Columns:
        return Columns(self.text_column, self.id_column)

    def model_settings(self) -> dict[str, Any]:
        """The MODEL_SETTINGS of `load`, as the manifest records them."""
        settings = {name: getattr(self.load, name) for name in MODEL_SETTINGS}
        settings["runtime"] = settings["runtime"] or AUTO  # None and "auto" choose alike
        if settings["tokenizer"] is not None:
            settings["tokenizer"] = str(settings["tokenizer"])  # a path as its text, for JSON
        return settings

    def fingerprint(self, files: list[InputFile]) -> dict[str, Any]:
        """What a resumed run must share with the first one for the rows to mean the same (and
        for the parts to be cut alike)."""
        options: dict[str, Any] = {
            "model": self.model,
            **self.model_settings(),
            "text_column": self.text_column,
            "id_column": self.id_column,
            "dimensions": self.dimensions,
            "embedding_type": self.embedding_type,
            # Kept so that every part but the last holds exactly this many rows, resumed or not
            # (PartWriter): a reader can find the part of the k-th embedded row.
            "rows_per_part": self.rows_per_part,
        }
        options["inputs"] = [_input_identity(f) for f in files]
        if self.embedding_type in BYTE_ENCODINGS:
            # Runs before this rule stored int8 as round(x * 127) and binary unsigned: a resume
            # must not append other bytes under the same name.
            options["byte_rule"] = BYTE_RULE
        return options


def _input_identity(file: InputFile) -> list[Any]:
    """An input file as the manifest records it: path, size and modification time. The time
    tells an edit that keeps the size (a word for another as long); a file copied or touched
    since is refused too, the safe side, where a hash of a sample of its bytes would have let
    an edit outside the sample through, and a hash of all of them costs a read of the corpus."""
    stat = file.path.stat()
    return [str(file.path.resolve()), stat.st_size, stat.st_mtime_ns]


@dataclass(frozen=True)
class FileSlice:
    """One input file, the global number of its first row, how many of its rows are done, and
    how many it had when the run counted them (the next file's rows are numbered after them)."""

    file: InputFile
    offset: int
    skip: int
    rows: int


def plan(files: list[InputFile], counts: list[int], next_row: int) -> list[FileSlice]:
    """The files still to read for a run that has written rows [0, next_row)."""
    slices, offset = [], 0
    for file, count in zip(files, counts):
        if offset + count > next_row:
            slices.append(FileSlice(file, offset, max(next_row - offset, 0), count))
        offset += count
    return slices


def locate(slices: list[FileSlice], row: int) -> str:
    """Where input row `row` (numbered across the files, as the output's `row`) lies among
    `slices`, a run's plan: its file's line, or its row counting from 0 for Parquet."""
    # The last that starts at or before it: a file of no rows shares its offset with the next.
    holder = [s for s in slices if s.offset <= row][-1]
    return where(holder.file, row - holder.offset)


def input_row(slices: list[FileSlice], row: int) -> str:
    """Input row `row` as every message about one names it: its number across the files (the
    output's `row`) and, in brackets, where it lies (`locate`)."""
    return f"input row {row} ({locate(slices, row)})"


def chunks_of(
    part: FileSlice, columns: Columns, batch_texts: int, on_error: str = "skip"
) -> Iterator[Chunk]:
    """Chunks of up to `batch_texts` embeddable rows (and the bad rows among them) from one file."""
    start = part.offset + part.skip
    chunk = Chunk(start, start)
    end = part.offset + part.rows
    number = part.offset - 1
    for number, row in enumerate(read_rows(part.file, columns, part.skip), part.offset):
        if number >= end:
            raise _changed_while_read(part, "more")
        if row is None:
            continue
        ident, text, reason = row
        if text is None:
            if on_error == "fail":
                # The output's `row` numbering, and the place in the file to look at.
                raise CorpusError(f"{input_row([part], number)}: {reason}")
            chunk.skipped.append((number, reason or "unreadable"))
        else:
            chunk.rows.append(number)
            chunk.ids.append(ident)
            chunk.texts.append(text)
        chunk.end = number + 1
        if len(chunk.rows) >= batch_texts:
            yield chunk
            chunk = Chunk(chunk.end, chunk.end)
    if number + 1 < end:
        raise _changed_while_read(part, "fewer")
    if chunk.end > chunk.start:
        yield chunk


def _changed_while_read(part: FileSlice, now: str) -> CorpusError:
    """A file that grew or shrank during the run: its rows no longer end where the next file's
    numbering starts, so the run stops rather than number two rows alike."""
    return CorpusError(
        f"{part.file.path} changed while it was read: {part.rows} rows when the run counted "
        f"them, {now} now; once nothing writes to it, start over (another --out, or delete "
        "this one: its parts were cut from the file as it was)"
    )


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate `items` on a background thread, at most `depth` ahead; its errors re-raise here."""
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(end)
        except BaseException as exc:  # noqa: BLE001 (carried to the consumer and raised there)
            put(_Failure(exc))
        finally:
            # Stops an upstream prefetch too when this one ends early (an error downstream).
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name="embedserve-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is end:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        # Wait for the stage to finish the item in hand (one model call at most): a thread left
        # inside ONNX Runtime or tokenizers as the interpreter exits (after Ctrl-C, an error
        # downstream) aborts the process ("terminate called without an active exception").
        thread.join()


@dataclass(frozen=True)
class _Failure:
    exc: BaseException


class LocalEmbedder:
    """The in-process model stage: one Engine, tokenizing one chunk ahead of the model; with a
    disk tier, the rows it holds are read from it and only the rest reach the engine."""

    def __init__(
        self, engine: Any, options: EmbedFileOptions, disk: DiskVectorCache | None = None
    ) -> None:
        self.engine = engine
        self.options = options
        self.disk = disk

    def __call__(self, slices: list[FileSlice]) -> Iterator[Chunk]:
        options = self.options
        chunks = (
            c
            for s in slices
            for c in chunks_of(s, options.columns, options.batch_texts, options.on_error)
        )
        tokenized = prefetch(((c, self._tokenize(c)) for c in chunks), depth=2)
        return prefetch((self._embed(c, seqs) for c, seqs in tokenized), depth=2)

    def _tokenize(self, chunk: Chunk) -> list[Any]:
        from embedserve.inputs import Inputs

        return self.engine.prepare(Inputs(texts=chunk.texts)).sequences if chunk.texts else []

    def _embed(self, chunk: Chunk, sequences: list[Any]) -> Chunk:
        if sequences:
            vectors = self.engine.finish(
                self._pooled(sequences), dimensions=self.options.dimensions
            )
            chunk.vectors = quantize(vectors, self.options.embedding_type)
            chunk.token_counts = np.fromiter((len(s) for s in sequences), np.int64, len(sequences))
        chunk.texts = []  # not needed past the model; free them before the writer's queue
        return chunk

    def _pooled(self, sequences: list[Any]) -> np.ndarray:
        if self.disk is None:
            return self.engine.pooled(sequences)
        found, missing = split_cached(self.disk, sequences)
        computed = self.engine.pooled([sequences[i] for i in missing])
        width = int(self.engine.model_info.dimension)
        return merge_cached(self.disk, sequences, found, missing, computed, width)


def open_disk_cache(options: EmbedFileOptions, engine: Any) -> DiskVectorCache | None:
    """The disk tier `options` asks for, for `engine`'s model, or None."""
    if options.cache_dir is None:
        return None
    return DiskVectorCache(
        options.cache_dir,
        model_identity(engine),
        int(engine.model_info.dimension),
        options.cache_dir_bytes,
    )


def load_engine(options: EmbedFileOptions) -> Any:
    from embedserve.engine import Engine

    engine = Engine.from_pretrained(options.model, options=options.load)
    engine.check_arguments(options.dimensions)
    return engine


def check_output(
    source: str | Path,
    out: str | Path,
    options: EmbedFileOptions,
    fingerprint: dict[str, Any] | None = None,
) -> tuple[list[InputFile], dict[str, Any]]:
    """The input files and the manifest's options for this run, once `out` is known to take it
    (new, or a run with these options): the checks that cost no model load, made before one."""
    files = find_inputs(source, exclude=out)
    identity = {**options.fingerprint(files), **(fingerprint or {})}
    Manifest.check(Path(out), identity)
    return files, identity


def embed_file(
    source: str | Path,
    out: str | Path,
    options: EmbedFileOptions | None = None,
    *,
    embedder: Callable[[list[FileSlice]], Iterable[Chunk]] | None = None,
    engine: Any = None,
    dimension: int | None = None,
    fingerprint: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Embed every row of `source` into the Parquet parts of folder `out`; resume if it holds a run.

    `embedder` replaces the in-process model stage (the Ray and server integrations pass their
    own); the reading plan, the output and the manifest are the same either way. An embedder
    with no `engine` gives the model's `dimension`, and in `fingerprint` the manifest options
    it decides instead of `options` (a server decides every MODEL_SETTINGS one: its precision,
    its tokenizer, ...). Returns the totals.
    """
    options = options or EmbedFileOptions()
    files, identity = check_output(source, out, options, fingerprint)
    disk = None
    if embedder is None:
        engine = engine or load_engine(options)
        disk = open_disk_cache(options, engine)
        embedder = LocalEmbedder(engine, options, disk)
    elif options.cache_dir is not None:
        raise ValueError("the disk cache (cache_dir) works with the in-process model only")
    try:
        width = _width_dimension(options, engine, dimension)
        # The manifest holds the output folder's lock until the run ends, however it ends.
        with Manifest.open(Path(out), identity) as manifest:
            return _run(manifest, out, options, files, embedder, width, disk, log)
    finally:
        if disk is not None:
            disk.close()


def _run(
    manifest: Manifest,
    out: str | Path,
    options: EmbedFileOptions,
    files: list[InputFile],
    embedder: Callable[[list[FileSlice]], Iterable[Chunk]],
    dimension: int,
    disk: DiskVectorCache | None,
    log: Callable[[str], None] | None,
) -> dict[str, Any]:
    resumed_from = manifest.next_row
    if manifest.complete:
        if log:
            totals = manifest.totals()
            # The files' row counts only when a skipped row is to be placed in them.
            counts = [count_rows(f) for f in files] if totals["skipped_rows"] else []
            log(
                summary(
                    totals,
                    out=str(out),
                    this_run_rows=0,
                    this_run_tokens=0,
                    seconds=0.0,
                    resumed_from=0,
                    place=partial(input_row, plan(files, counts, 0)),
                )
                + "\n(already complete)"
            )
        return {**manifest.totals(), "seconds": 0.0, "this_run_rows": 0}
    counts = [count_rows(f) for f in files]
    writer = PartWriter(manifest, options.embedding_type, dimension, options.rows_per_part)
    progress = Progress(sum(counts), resumed_from, quiet=options.quiet)
    try:
        for chunk in embedder(plan(files, counts, resumed_from)):
            writer.write(chunk)
            progress.update(chunk)
        writer.close()
        manifest.finish()
    except BaseException:
        writer.abort()
        raise
    finally:
        progress.close()
    totals = manifest.totals()
    if log:
        log(
            summary(
                totals,
                out=str(out),
                this_run_rows=progress.rows,
                this_run_tokens=progress.tokens,
                seconds=progress.elapsed,
                resumed_from=resumed_from,
                cache=None if disk is None else (disk.hits, disk.misses, str(disk.directory)),
                # Every file from row 0: a resumed run lists rows skipped before it too.
                place=partial(input_row, plan(files, counts, 0)),
            )
        )
    totals["seconds"] = progress.elapsed
    totals["this_run_rows"] = progress.rows
    if disk is not None:
        totals["cache_hits"], totals["cache_misses"] = disk.hits, disk.misses
    return totals


def _width_dimension(options: EmbedFileOptions, engine: Any, dimension: int | None) -> int:
    if options.dimensions is not None:
        return options.dimensions
    if dimension is not None:
        return dimension
    if engine is None:
        raise ValueError("the output dimension is unknown: pass an engine or --dimensions")
    return int(engine.model_info.dimension)
