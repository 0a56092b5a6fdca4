"""Ray Data integration: embed a `ray.data.Dataset` with one Engine per actor, or a whole corpus.

    import ray
    from embedserve.integrations.ray import EmbedBatch

    ds = ray.data.read_parquet("s3://bucket/docs/")
    ds = ds.map_batches(EmbedBatch, fn_constructor_kwargs={"model": "all-MiniLM-L6-v2"},
                        batch_size=512, concurrency=8, num_cpus=2)

`embed_file_on_ray` is `embedserve embed-file --ray`: the same file plan, rows, bad-row reports,
output parts and manifest as the local run, with reading and embedding done by Ray Data tasks
and actors, and the driver only writing what comes back, in input order.

Needs the `ray` extra (`pip install 'embedserve[ray]'`); embedserve must be installed on every
node.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from embedserve.corpus.output import Chunk
from embedserve.corpus.pipeline import (
    EmbedFileOptions,
    FileSlice,
    chunks_of,
    embed_file,
    load_engine,
)
from embedserve.corpus.readers import Columns, InputFile
from embedserve.loading import LoadOptions
from embedserve.models import DEFAULT_MODEL
from embedserve.quantization import dtype, quantize, width

log = logging.getLogger(__name__)

_READ_SCHEMA = pa.schema(
    [("row", pa.int64()), ("id", pa.string()), ("text", pa.string()), ("reason", pa.string())]
)


class EmbedBatch:
    """A callable class for `Dataset.map_batches`: loads one Engine per actor, once.

    Adds `embedding` ([n, width] array: float32, or the `embedding_type` asked for) and `tokens`
    to each batch. Rows whose `text_column` is not a non-empty string get a zero vector and 0
    tokens (embed-file marks them skipped before they get here and drops them after). How the
    model loads is `load` (a LoadOptions) and/or its fields as keyword arguments (`precision`,
    `providers`, `intra_op_threads`, ...), as for `Engine.from_pretrained`.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        text_column: str = "text",
        dimensions: int | None = None,
        embedding_type: str = "float32",
        output_column: str = "embedding",
        load: LoadOptions | None = None,
        **changes: Any,
    ) -> None:
        self.options = EmbedFileOptions(
            model=model,
            text_column=text_column,
            dimensions=dimensions,
            embedding_type=embedding_type,
            load=LoadOptions.of(load, **changes),
        )
        self.output_column = output_column
        self.engine = load_engine(self.options)
        self.dimension = dimensions or self.engine.model_info.dimension

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        column = self.options.text_column
        if column not in batch:
            # Not a bare KeyError: it reaches the user at the end of Ray's traceback wall.
            raise ValueError(
                f"EmbedBatch: the batch has no {column!r} column (text_column); its columns: "
                f"{', '.join(map(repr, batch)) or 'none'}"
            )
        texts = batch[column]
        good = [i for i, text in enumerate(texts) if isinstance(text, str) and text.strip()]
        kind = self.options.embedding_type
        out: np.ndarray | None = None
        tokens = np.zeros(len(texts), dtype=np.int64)
        if good:
            result = self.engine.embed([texts[i] for i in good], dimensions=self.options.dimensions)
            values = quantize(result.embeddings, kind)
            out = np.zeros((len(texts), values.shape[1]), dtype=values.dtype)
            out[good] = values
            tokens[good] = result.token_counts
        else:
            out = np.zeros((len(texts), width(kind, self.dimension)), dtype=dtype(kind))
        return {**batch, self.output_column: out, "tokens": tokens}


def read_slices(
    batch: dict[str, np.ndarray], *, columns: Columns, batch_texts: int, on_error: str
) -> Iterator[pa.Table]:
    """map_batches function: each input row names a file slice; yields its rows as tables."""
    for path, fmt, offset, skip, rows in zip(
        batch["path"], batch["format"], batch["offset"], batch["skip"], batch["rows"]
    ):
        file = InputFile(Path(str(path)), str(fmt))
        part = FileSlice(file, int(offset), int(skip), int(rows))
        for chunk in chunks_of(part, columns, batch_texts, on_error):
            yield _chunk_table(chunk)


def _chunk_table(chunk: Chunk) -> pa.Table:
    """Every row of a chunk, skipped ones too, so the driver sees each row number once."""
    rows = list(range(chunk.start, chunk.end))
    good = dict(zip(chunk.rows, zip(chunk.ids, chunk.texts)))
    bad = dict(chunk.skipped)
    return pa.Table.from_pydict(
        {
            "row": rows,
            "id": [good[r][0] if r in good else None for r in rows],
            "text": [good[r][1] if r in good else None for r in rows],
            "reason": [bad.get(r) for r in rows],
        },
        schema=_READ_SCHEMA,
    )


class RayEmbedder:
    """embed-file's model stage on Ray Data: file slices in, embedded chunks out, in row order."""

    def __init__(
        self,
        options: EmbedFileOptions,
        *,
        actors: int | None = None,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
    ) -> None:
        self.options = options
        self.actors = actors
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus

    def __call__(self, slices: list[FileSlice]) -> Iterator[Chunk]:
        import ray

        if not slices:
            return iter(())
        options = self.options
        items = [
            {
                "path": str(s.file.path),
                "format": s.file.format,
                "offset": s.offset,
                "skip": s.skip,
                "rows": s.rows,
            }
            for s in slices
        ]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        # Rows must reach the driver in input order: the parts and resume depend on it. Set on
        # this Dataset's own context (a copy of the current one, which its later steps share),
        # not on the current one, where it would slow the caller's own Datasets too.
        ds.context.execution_options.preserve_order = True
        # Readers are light next to the model: a fraction of a CPU keeps them from starving actors.
        ds = ds.map_batches(
            read_slices,
            batch_size=1,
            num_cpus=0.25,
            fn_kwargs={
                "columns": options.columns,
                "batch_texts": options.batch_texts,
                "on_error": options.on_error,
            },
        )
        threads = options.load.intra_op_threads or max(1, int(self.num_cpus))
        ds = ds.map_batches(
            EmbedBatch,
            fn_constructor_kwargs={
                "model": options.model,
                "text_column": "text",
                "dimensions": options.dimensions,
                "embedding_type": options.embedding_type,
                "load": replace(options.load, intra_op_threads=threads),
            },
            batch_size=options.batch_texts,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.actors or self._default_actors()),
            num_cpus=self.num_cpus,
            num_gpus=self.num_gpus or None,
        )
        return (
            _to_chunk(batch)
            for batch in ds.iter_batches(batch_size=options.batch_texts, batch_format="numpy")
        )

    def check_fits(self, nodes: list[dict[str, float]], *, can_grow: bool) -> None:
        """An actor no node has room for (`nodes`: each live node's resources): Ray would keep it
        pending, saying nothing (`--ray-gpus-per-actor 1` on a cluster without GPUs). Refused on
        a Ray this run started, which never grows, so the run would wait forever; a warning on a
        cluster it joined (`can_grow`), whose autoscaler may still add such a node."""
        for name, wanted, flag in (
            ("GPU", self.num_gpus, "--ray-gpus-per-actor"),
            ("CPU", self.num_cpus, "--ray-cpus-per-actor"),
        ):
            most = max((node.get(name, 0.0) for node in nodes), default=0.0)
            if wanted <= most:
                continue
            problem = (
                f"each Ray actor asks for {wanted:g} {name}(s) ({flag}), but no node of the Ray "
                f"cluster has that many (the most on one node: {most:g})"
            )
            if not can_grow:
                raise ValueError(f"{problem}: no actor could start, and the run would wait forever")
            log.warning("%s: the run waits until the cluster adds such a node", problem)

    def _default_actors(self) -> int:
        import ray

        resources = ray.cluster_resources()
        if self.num_gpus:
            return max(1, math.floor(resources.get("GPU", 1) / self.num_gpus))
        # One CPU stays for the readers and the driver.
        return max(1, math.floor((resources.get("CPU", 2) - 1) / self.num_cpus))


def _to_chunk(batch: dict[str, np.ndarray]) -> Chunk:
    rows = batch["row"].tolist()
    chunk = Chunk(rows[0], rows[-1] + 1) if rows else Chunk(0, 0)
    good = []
    # Ray's NumPy batches may turn nulls in string columns into None or NaN: only str is a value.
    for at, (row, reason) in enumerate(zip(rows, batch["reason"])):
        if not isinstance(reason, str):
            good.append(at)
            chunk.rows.append(row)
            ident = batch["id"][at]
            chunk.ids.append(ident if isinstance(ident, str) else None)
        else:
            chunk.skipped.append((row, reason))
    chunk.vectors = np.ascontiguousarray(batch["embedding"][good])
    chunk.token_counts = np.asarray(batch["tokens"][good], dtype=np.int64)
    return chunk


def embed_file_on_ray(
    source: str | Path,
    out: str | Path,
    options: EmbedFileOptions | None = None,
    *,
    address: str | None = None,
    actors: int | None = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
) -> dict[str, Any]:
    """`embed_file` with Ray Data doing the reading and embedding (connects or starts Ray)."""
    import ray

    options = options or EmbedFileOptions()
    if not ray.is_initialized():
        # No address (or 'auto' with RAY_ADDRESS unset): Ray starts a local instance.
        ray.init(address=None if address in (None, "", "local") else address, log_to_driver=False)
    # A Ray this process started (here or before the call: its head node is this process's)
    # has no autoscaler; a cluster joined may grow (`check_fits`). Ray says which only on its
    # private node object.
    head = getattr(getattr(ray._private.worker, "_global_node", None), "head", False)
    embedder = RayEmbedder(options, actors=actors, num_cpus=num_cpus, num_gpus=num_gpus)
    embedder.check_fits(
        [node["Resources"] for node in ray.nodes() if node["Alive"]], can_grow=not head
    )
    # The driver loads the model once too, on the CPU: it fails fast on a wrong name and tells
    # the output's dimension before any cluster work starts.
    probe = load_engine(replace(options, load=replace(options.load, providers="cpu")))
    return embed_file(source, out, options, embedder=embedder, engine=probe)
