"""The models a server answers for: each one's names, engine, batcher, and whether it is loaded.

A model may serve more than one kind: a BGE-M3 folder is an embedder (its dense vector) that
also serves its sparse head (/embed_sparse) and its ColBERT head (/embed_all, MaxSim rerank and
score). Each extra kind is its own (engine, batcher) pair on the same pipeline, so a request
runs the encoder once for its own task; the forwards are not shared across tasks. The heads run
over the embedder's ONNX Runtime session (no second copy of the weights, only their small linear
layers); where the embedder's session cannot give fp32 token states, the sparse head opens a
session of its own (one more copy of the encoder's weights).

Models load on a background thread after the server starts, so `/health` answers at once and
`/ready` says when they are usable. Loading happens in the process that serves them — after any
fork — as sessions and tokenizers must be created there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from embedserve.batching import Batcher
from embedserve.bge_m3 import M3Colbert, load_colbert_head
from embedserve.engine import Engine
from embedserve.kinds import loader_for
from embedserve.late_interaction import ColBERT
from embedserve.loading import LoadOptions
from embedserve.models import resolve_model_dir
from embedserve.models.bge_m3 import COLBERT_LINEAR, SPARSE_LINEAR, heads
from embedserve.models.kind import EMBEDDER, LATE_INTERACTION, RERANKER, SPARSE
from embedserve.reranker import Reranker
from embedserve.runtime.huge_pages import back_with_huge_pages
from embedserve.server.config import ModelSpec, ServerConfig
from embedserve.server.errors import model_not_found, not_ready, wrong_kind
from embedserve.server.metrics import Metrics
from embedserve.server.niceness import lower_this_thread
from embedserve.sparse import SparseEncoder

log = logging.getLogger(__name__)


class ServedModel:
    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.id = spec.id
        self.created = int(time.time())
        self.engine: Any = None  # an Engine (embedder), a Reranker or a SparseEncoder
        self.batcher: Batcher | None = None
        # The kinds it serves besides its own (a BGE-M3's sparse and ColBERT heads).
        self.extras: dict[str, tuple[Any, Batcher]] = {}
        self.error: str | None = None

    @property
    def ready(self) -> bool:
        return self.batcher is not None

    @property
    def kind(self) -> str | None:
        """EMBEDDER, RERANKER or SPARSE once loaded; None before."""
        return None if self.engine is None else kind_of(self.engine)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Every kind it serves, its own first; empty before it is loaded."""
        return () if self.kind is None else (self.kind, *self.extras)

    def can(self, kind: str) -> bool:
        return self.ready and kind in self.kinds

    def require(self, kind: str = EMBEDDER, *others: str) -> tuple[Any, Batcher]:
        """The engine and batcher of the first of `kind`, `others` the model serves; a 503 while
        the model is still loading (or failed to), or a 400 when it serves none of them."""
        if self.engine is None or self.batcher is None:
            raise not_ready(self.id, self.error)
        for wanted in (kind, *others):
            if self.kind == wanted:
                return self.engine, self.batcher
            if wanted in self.extras:
                return self.extras[wanted]
        raise wrong_kind(self.id, self.kind or "", kind)

    @property
    def batchers(self) -> list[Batcher]:
        own = [] if self.batcher is None else [self.batcher]
        return own + [batcher for _, batcher in self.extras.values()]


def kind_of(engine: object) -> str:
    return getattr(engine, "kind", EMBEDDER)


class ModelRegistry:
    def __init__(
        self,
        config: ServerConfig,
        metrics: Metrics,
        engines: Mapping[str, Engine | Reranker | SparseEncoder | ColBERT] | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.models = [ServedModel(spec) for spec in config.models]
        self._by_name = {name: m for m in self.models for name in m.spec.names}
        self._by_folded = {name.casefold(): m for name, m in reversed(self._by_name.items())}
        self._preloaded = dict(engines or {})
        unknown = set(self._preloaded) - {m.id for m in self.models}
        if unknown:
            raise ValueError(
                f"engines given for models the config does not serve: {sorted(unknown)}"
            )
        self._loader: threading.Thread | None = None

    @property
    def default(self) -> ServedModel:
        """The model used when an Azure AI request names none: the first `--model`."""
        return self.models[0]

    @property
    def ready(self) -> bool:
        return all(m.ready for m in self.models)

    def find(self, name: str) -> ServedModel | None:
        return self._by_name.get(name) or self._by_folded.get(name.casefold())

    def get(self, name: str) -> ServedModel:
        model = self.find(name)
        if model is None:
            raise model_not_found(name)
        return model

    def start(self) -> None:
        for model in self.models:
            if model.id in self._preloaded:
                self._serve(model, self._preloaded[model.id])
        if not self.ready:
            self._loader = threading.Thread(
                target=self._load_all, name="embedserve-loader", daemon=True
            )
            self._loader.start()

    def stop(self) -> None:
        """Stop every batcher taking work; what still waits gets 503 (the end of a drain)."""
        for model in self.models:
            for batcher in model.batchers:
                batcher.stop()

    def close(self) -> None:
        for model in self.models:
            for batcher in model.batchers:
                batcher.close()

    def _load_all(self) -> None:
        # Threads inherit the nice value of the thread that starts them: ONNX Runtime's pool
        # (started with the session) and the batcher (started in `_serve`) run below the event
        # loop, so a busy model cannot delay /health, 429s or admission (bench/NOTES.md).
        lower_this_thread(self.config.model_nice)
        for model in self.models:
            if model.ready:
                continue
            started = time.perf_counter()
            try:
                options = LoadOptions.of(self.config, name=model.id)
                model_dir = resolve_model_dir(model.spec.spec, compile=options.compile)
                engine = loader_for(model_dir).from_pretrained(model_dir, options=options)
                extras = extra_engines(model_dir, options, engine)
            except Exception as exc:  # noqa: BLE001 - the server stays up and says why in /ready and 503s
                model.error = f"{type(exc).__name__}: {exc}"
                log.error(
                    "could not load model %s (%s): %s", model.id, model.spec.spec, model.error
                )
                continue
            self._serve(model, engine, extras)
            log.info(
                "model %s ready on %s in %.1fs",
                model.id,
                engine.model_info.provider,
                time.perf_counter() - started,
            )

    def first_ready(self, kind: str) -> ServedModel | None:
        """The first loaded model in `--model` order that serves `kind` (its own or an extra)."""
        return next((m for m in self.models if m.can(kind)), None)

    def _serve(
        self, model: ServedModel, engine: Any, extras: Mapping[str, Any] | None = None
    ) -> None:
        batchers = [self._batcher(model, e) for e in (engine, *(extras or {}).values())]
        self.metrics.watch_queue(model.id, batchers)
        cache = getattr(engine, "cache", None)
        if cache is not None:
            self.metrics.watch_cache(model.id, cache)
        model.extras = {
            kind: (extra, batcher)
            for (kind, extra), batcher in zip((extras or {}).items(), batchers[1:])
        }
        model.engine = engine
        if self.config.huge_pages:
            # Once every session of the model (its lane session too) is open, and before it is
            # ready: the collapse takes ~0.4 s and slows the model runs beside it.
            back_with_huge_pages()
        model.batcher = batchers[0]  # set last: `ready` reads it

    def _batcher(self, model: ServedModel, engine: Any) -> Batcher:
        # The batcher's rows: pooled vectors for an embedder, one logit per label for a reranker,
        # one SparseVector object for a sparse encoder, none for a ColBERT (its token vectors
        # travel on the sequences: late_interaction.py).
        info = engine.model_info
        kind = kind_of(engine)
        if kind == RERANKER:
            width = info.num_labels
        elif kind in (SPARSE, LATE_INTERACTION):
            width = 1 if kind == SPARSE else 0
        else:
            width = info.dimension
        lane_engine = getattr(engine, "lane_engine", None)  # an embedder's, on the CPU
        lane = lane_engine(self.config.lane_session) if lane_engine is not None else None
        batcher = Batcher(
            engine.forward,
            width,
            name=model.id,
            max_batch_tokens=engine.max_batch_tokens,
            max_batch_requests=self.config.max_batch_requests,
            max_queue_inputs=self.config.max_queue,
            max_wait_seconds=self.config.max_wait_seconds,
            on_batch=self.metrics.batch_observer(model.id),
            dtype=object if kind == SPARSE else np.float32,
            lane_forward=lane.forward if lane is not None else None,
        )
        batcher.start()
        return batcher


def extra_engines(model_dir: Any, options: LoadOptions, engine: object) -> dict[str, Any]:
    """The kinds an embedder's folder serves besides dense vectors: a BGE-M3's sparse head and
    ColBERT head, both over `engine`'s session where it can serve them (the sparse head opens
    its own fp32 session otherwise). A head that cannot
    load with these options (the sparse head runs fp32 only; the ColBERT head needs token
    states, which a graph pooling on the device has not) is left out with a warning: the dense
    vectors are still served."""
    if kind_of(engine) != EMBEDDER:
        return {}
    loaders: dict[str, Any] = {}
    present = heads(model_dir)
    if SPARSE_LINEAR in present:
        # Its own session runs fp32 on ONNX Runtime, the only way a sparse encoder runs.
        fp32 = LoadOptions.of(options, precision="fp32", quantize=None, runtime="onnxruntime")
        loaders[SPARSE] = lambda: (
            SparseEncoder.bge_m3_over(engine)  # type: ignore[arg-type]
            or SparseEncoder.from_pretrained(model_dir, options=fp32)
        )
    if COLBERT_LINEAR in present:
        loaders[LATE_INTERACTION] = lambda: M3Colbert(engine, load_colbert_head(model_dir))  # type: ignore[arg-type]
    found: dict[str, Any] = {}
    for kind, load in loaders.items():
        try:
            found[kind] = load()
        except Exception as exc:  # noqa: BLE001 - the model's own kind is served regardless
            log.warning(
                "%s: its %s head is not served: %s: %s", options.name, kind, type(exc).__name__, exc
            )
    return found
