"""The embedding engine: tokenize → plan micro-batches → run the model → pool → cut/normalize."""

from __future__ import annotations

import copy
import operator
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from embedserve import _core
from embedserve.errors import InputError
from embedserve.fanout import map_on_threads
from embedserve.inputs import Inputs, TextsOrTokens, check_flag, text_batch
from embedserve.loading import LoadPlan, Pretrained, Runs
from embedserve.models import ModelConfig, load_model_config
from embedserve.models.config import check_max_length
from embedserve.models.dense import load_dense
from embedserve.models.kind import not_an_embedder
from embedserve.models.pooling_graph import POOLING_MODES
from embedserve.models.st_modules import ModelConfigError, pooling_modes
from embedserve.models.variants import graph_for
from embedserve.planning import (
    bulk_batch_tokens,
    bulk_workers,
    default_max_batch_tokens,
    goes_wide,
    lane_threads,
    pad_batch,
    plan_batches,
)
from embedserve.precision import CUDA_BOUND
from embedserve.preparing import TextPreparer
from embedserve.runtime import EncoderSession
from embedserve.runtime.backends import Backend, open_backend
from embedserve.runtime.providers import CPU
from embedserve.tokenization import ModelTokenizer, check_direction
from embedserve.vector_cache import DEFAULT_CACHE_BYTES, VectorCache, merge_cached, split_cached


def pool(states: np.ndarray, mask: np.ndarray, mode: str, skip: np.ndarray | None) -> np.ndarray:
    """The kernel's pooled vectors for `mode`, those of each mode side by side where a
    sentence-transformers Pooling concatenates several (`pooling_modes`)."""
    modes = pooling_modes(mode)
    if len(modes) == 1:
        return _core.pool(states, mask, mode, skip)
    return np.concatenate([_core.pool(states, mask, m, skip) for m in modes], axis=1)


def _as_integer(value: object) -> int:
    """`value` as an int when it is one (a NumPy integer too); 0, which no range holds, for a
    bool, float, str or anything else, so the range check refuses it before the model runs."""
    if isinstance(value, (bool, np.bool_)):
        return 0
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return 0


@dataclass(frozen=True)
class ModelInfo:
    name: str
    dimension: int
    max_tokens: int
    pooling: str
    normalize: bool
    supports_dimensions: bool
    provider: str
    prompts: dict[str, str] = field(default_factory=dict)
    precision: str = "fp32"
    # "bert", "nomic_bert", "StaticEmbedding", ... (models/family.py); None for a graph of a
    # family embedserve does not compile.
    family: str | None = None


@dataclass(frozen=True)
class EmbeddingResult:
    embeddings: np.ndarray
    token_counts: np.ndarray

    @property
    def total_tokens(self) -> int:
        return int(self.token_counts.sum())


class Engine(TextPreparer, Pretrained):
    """Turns texts or token arrays into the vectors sentence-transformers gives. Thread-safe.

    `Engine.from_pretrained(spec, **options)` loads one (see loading.Pretrained, LoadOptions).
    """

    # Every precision and runtime. On CUDA the default precision is fp16, the graph also pools on
    # the device (the per-request cut and normalization run on the [n, d] rows) and it runs
    # through IOBinding (runtime/cuda.py).
    runs = Runs("embedders", cuda_precision="fp16")

    def __init__(
        self,
        config: ModelConfig,
        tokenizer: ModelTokenizer,
        session: EncoderSession | Backend,
        *,
        max_batch_tokens: int | None = None,
        precision: str = "fp32",
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        bulk_session: str = "auto",
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.session = session
        # Pooled vectors by the exact ids the model saw, for the library and every server route.
        self.cache = VectorCache(cache_bytes)
        self.max_batch_tokens = max_batch_tokens or default_max_batch_tokens(session.provider)
        # Calls with many micro-batches run them on a one-thread session from several threads
        # at once (`pooled`; planning.bulk_workers): opened on the first such call.
        self.bulk_workers = self._cpu_threads(lambda t, g: bulk_workers(t, bulk_session, g))
        self._bulk: Engine | None = None
        self._bulk_lock = threading.Lock()
        # Dense heads after pooling (sentence-transformers' Dense modules), applied in order.
        self.dense = [load_dense(path) for path in config.dense_paths]
        # A Pooling that concatenates several modes gives vectors as many times as wide.
        pooled_width = session.hidden_size and session.hidden_size * len(
            pooling_modes(config.pooling)
        )
        dimension = self.dense[-1].out_features if self.dense else pooled_width or config.dimension
        if dimension is None:
            raise ValueError(f"{config.directory}: cannot tell the embedding dimension")
        # A saved truncate_dim is the model's width to sentence-transformers: every vector is
        # cut to it (`forward`, before caching and normalization) and it is the one reported.
        if config.truncate_dim:
            dimension = min(int(dimension), config.truncate_dim)
        self.model_info = ModelInfo(
            name=config.name,
            dimension=int(dimension),
            max_tokens=tokenizer.max_length,
            pooling=config.pooling,
            normalize=config.normalize,
            supports_dimensions=config.supports_dimensions,
            provider=session.provider,
            prompts=dict(config.prompts),
            precision=precision,
            family=config.family,
        )

    @classmethod
    def graph(cls, plan: LoadPlan) -> Path:
        config = load_model_config(plan.config_dir, plan.name)
        chosen = plan.precision
        # On CUDA, pooling moves into the graph where the graph pass has the mode, every token
        # is pooled and the graph is a float one; otherwise the C++ kernels pool.
        in_graph = (
            config.pooling
            if plan.runtime == CUDA_BOUND
            and config.pooling in POOLING_MODES
            and config.include_prompt
            and chosen.graph != "int8-static"
            else None
        )
        return graph_for(
            plan.model_dir,
            chosen,
            plan.config_dir,
            pooling=in_graph,
            compile=plan.options.compile,
            # The model's own limit, not a caller's max_length: one int8 graph a model.
            max_length=config.max_seq_length,
            tokenizer_mode=plan.options.tokenizer_mode,
        )

    @classmethod
    def from_plan(cls, plan: LoadPlan) -> Engine:
        refusal = not_an_embedder(plan.model_dir)
        if refusal is not None:
            raise ModelConfigError(refusal)
        config = load_model_config(plan.config_dir, plan.name)
        if plan.options.max_length is not None:
            max_length = check_max_length(plan.config_dir, plan.options.max_length)
            config = replace(config, max_seq_length=max_length)
        session = open_backend(
            cls.graph(plan),
            plan.precision,
            plan.runtime,
            plan.session_options,
            max_sequence=config.max_seq_length,
        )
        return cls(
            config,
            ModelTokenizer(
                config.tokenizer_dir / "tokenizer.json",
                config.max_seq_length,
                plan.options.tokenizer_mode,
                special_tokens=config.static_embedding is None,
            ),
            session,
            max_batch_tokens=plan.max_batch_tokens(session.provider),
            precision=plan.precision.name,
            cache_bytes=plan.options.cache_bytes,
            bulk_session=plan.options.bulk_session,
        )

    # -- the steps, public so the server's batcher can run them separately --

    def forward(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Pooled float32 [n, dimension] for one padded batch (the Dense heads applied, cut to a
        saved truncate_dim; no per-call cut, no normalization)."""
        ids, mask, types = pad_batch(list(sequences))
        out = self.session.run(ids, mask, types)
        if self.session.pooled:
            pooled = out
        else:
            for row, seq in enumerate(sequences):
                if getattr(seq, "keep_states", False):  # /embed_all: the real tokens' states
                    seq.states = out[row, : len(seq)].copy()
            skip = None
            if not self.config.include_prompt:
                skip = np.fromiter(
                    (getattr(s, "pool_skip", 0) for s in sequences), np.int64, len(sequences)
                )
            pooled = pool(out, mask, self.config.pooling, skip)
        for layer in self.dense:
            pooled = layer(pooled)
        if pooled.shape[1] > self.model_info.dimension:  # the model's saved truncate_dim
            pooled = np.ascontiguousarray(pooled[:, : self.model_info.dimension])
        return pooled

    def lane_engine(self, mode: str) -> Engine | None:
        """This engine over a session of one thread fewer, for the server's batch lane
        (`planning.lane_threads` under `mode`); None where there is none: not an ONNX Runtime
        CPU session, a single thread, or the mode says no (auto: a large graph says no too).
        Shares tokenizer, heads and cache."""
        threads = self._cpu_threads(lambda t, g: lane_threads(t, mode, g))
        return self._with_threads(threads) if threads else None

    def _cpu_threads(self, rule: Callable[[int, int], int]) -> int:
        """`rule(threads, graph_bytes)` for an ONNX Runtime CPU session; 0 for any other."""
        session = self.session
        if not isinstance(session, EncoderSession) or session.provider != CPU:
            return 0
        return rule(session.threads, session.graph_bytes)

    def _with_threads(self, threads: int) -> Engine:
        """This engine (tokenizer, heads, cache) over its graph on a session of `threads`."""
        other = copy.copy(self)
        other.session = self.session.with_threads(threads)  # type: ignore[union-attr]
        other.bulk_workers = 0
        return other

    def bulk_engine(self) -> Engine | None:
        """This engine over a session of one intra-op thread, on which bulk calls run their
        batches `bulk_workers` at a time; opened once, on the first call that asks. None where
        there is none (`bulk_workers` is 0)."""
        if not self.bulk_workers:
            return None
        with self._bulk_lock:
            if self._bulk is None:
                self._bulk = self._with_threads(1)
            return self._bulk

    def pooled(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Pooled vectors for any number of sequences, in their order: cached ones from the cache,
        the rest via length-sorted micro-batches."""
        found, missing = split_cached(self.cache, sequences)
        computed = self._run_batches([sequences[i] for i in missing])
        return merge_cached(
            self.cache, sequences, found, missing, computed, self.model_info.dimension
        )

    def _run_batches(self, todo: list[np.ndarray]) -> np.ndarray:
        """Pooled rows of `todo`: one micro-batch after another on the model's session, or, for a
        call with enough batches (planning.goes_wide), `bulk_workers` at a time on the bulk one."""
        computed = np.empty((len(todo), self.model_info.dimension), dtype=np.float32)
        lengths = np.fromiter((len(s) for s in todo), dtype=np.int64, count=len(todo))
        batches = plan_batches(lengths, self.max_batch_tokens)
        if len(batches) > 1 and self.bulk_workers:
            budget = bulk_batch_tokens(self.max_batch_tokens)
            wide = plan_batches(lengths, budget)
            bulk = self.bulk_engine() if goes_wide(wide, self.bulk_workers) else None
            if bulk is not None:
                runs = map_on_threads(
                    lambda group: bulk.forward([todo[i] for i in group]), wide, self.bulk_workers
                )
                for group, rows in zip(wide, runs):
                    computed[group] = rows
                return computed
        for group in batches:
            computed[group] = self.forward([todo[i] for i in group])
        return computed

    def finish(
        self, pooled: np.ndarray, *, dimensions: int | None = None, normalize: bool | None = None
    ) -> np.ndarray:
        """Matryoshka cut to `dimensions`, then L2 normalization if asked (default: the model's).

        Trusts `dimensions` (the server's limits and `embed` check it); the C++ kernel still refuses
        an out-of-range value rather than read past a row.

        Works in place, to spare a copy of the whole answer: `pooled` (a writable C-contiguous
        float32 array, as `pooled()` returns) is overwritten and a view of its first
        `dimensions` columns returned. Pass a copy to keep the pooled vectors.
        """
        wanted = self.config.normalize if normalize is None else normalize
        return _core.cut_and_normalize_(pooled, dimensions, wanted)

    def check_arguments(
        self,
        dimensions: int | None,
        truncation_direction: str = "right",
        *,
        normalize: bool | None = None,
        truncate: bool = True,
    ) -> None:
        """The library boundary's checks (the server checks the same fields in its schema)."""
        # Before the model runs: the kernel refused a list for `normalize` only after it.
        check_flag(normalize, "normalize", optional=True)
        check_flag(truncate, "truncate")
        size = self.model_info.dimension
        if dimensions is not None and not 1 <= _as_integer(dimensions) <= size:
            raise InputError(
                f"dimensions must be between 1 and {size}, got {dimensions!r}", param="dimensions"
            )
        check_direction(truncation_direction)

    # -- the whole thing --

    def embed(
        self,
        inputs: TextsOrTokens,
        *,
        dimensions: int | None = None,
        normalize: bool | None = None,
        truncate: bool = True,
        truncation_direction: str = "right",
        prompt_name: str | None = None,
    ) -> EmbeddingResult:
        """Vectors for `inputs` (a string, strings, one token array or token arrays), in input order."""
        self.check_arguments(
            dimensions, truncation_direction, normalize=normalize, truncate=truncate
        )
        prepared = self.prepare(
            inputs,
            truncate=truncate,
            truncation_direction=truncation_direction,
            prompt_name=prompt_name,
        )
        vectors = self.finish(
            self.pooled(prepared.sequences), dimensions=dimensions, normalize=normalize
        )
        return EmbeddingResult(np.ascontiguousarray(vectors), prepared.token_counts)

    def embed_all(self, texts: str | Sequence[str], *, truncate: bool = True) -> list[np.ndarray]:
        """Every token's final hidden state [tokens, hidden] for each text, special tokens
        included, padding not (TEI's /embed_all; sentence-transformers' token_embeddings)."""
        self.check_token_states()
        self.check_arguments(None, truncate=truncate)
        batch = text_batch(texts, "texts")
        prepared = self.prepare(Inputs(texts=batch), truncate=truncate).keeping_states()
        for group in plan_batches(prepared.token_counts, self.max_batch_tokens):
            self.forward([prepared.sequences[i] for i in group])
        return [seq.states for seq in prepared.sequences]  # type: ignore[attr-defined]

    def check_token_states(self) -> None:
        """Token states need a graph that returns them: not one that pools on the device."""
        if self.session.pooled:
            raise InputError(
                f"{self.model_info.name} pools inside its graph (CUDA with in-graph pooling), so "
                "it has no token vectors to return; load it with precision fp32 on ONNX "
                "Runtime's plain CUDA session or on the CPU"
            )

    def similarity(
        self,
        source_sentence: str,
        sentences: Sequence[str],
        *,
        truncate: bool = True,
        truncation_direction: str = "right",
        prompt_name: str | None = None,
    ) -> np.ndarray:
        """Cosine similarity of `source_sentence` with each of `sentences` (TEI's /similarity,
        sentence-transformers' `similarity` with the default cosine): float32 [len(sentences)]."""
        if not isinstance(source_sentence, str):
            raise InputError(
                f"source_sentence must be a string, not {type(source_sentence).__name__}",
                param="source_sentence",
            )
        # The checked list, not `sentences` again: a generator is read up by the check.
        batch = [] if isinstance(sentences, str) else text_batch(sentences, "sentences")
        if not batch:
            raise InputError("sentences must be a non-empty array of strings", param="sentences")
        vectors = self.embed(
            [source_sentence, *batch],
            normalize=True,
            truncate=truncate,
            truncation_direction=truncation_direction,
            prompt_name=prompt_name,
        ).embeddings
        return vectors[1:] @ vectors[0]

    def tokenize(
        self,
        texts: str | Sequence[str],
        *,
        truncate: bool = True,
        truncation_direction: str = "right",
    ) -> list[list[int]]:
        """Token ids each text becomes, special tokens included, as the model would see them."""
        self.check_arguments(None, truncation_direction, truncate=truncate)
        batch = text_batch(texts, "texts")
        prepared = self.prepare(
            Inputs(texts=batch), truncate=truncate, truncation_direction=truncation_direction
        )
        return [s.tolist() for s in prepared.sequences]
