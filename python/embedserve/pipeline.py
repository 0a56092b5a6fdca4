"""A GPU-sized embed: tokenization on worker threads ahead of the model, two batches in flight.

With the model on a GPU, tokenizing, padding and copying become most of a call's time. Here the
texts are cut into chunks; chunks are tokenized on `tokenize_threads` threads (the tokenizer
releases the GIL) while the model already runs the batches of the chunks that are ready, on
`in_flight` threads, so the next batch's host work overlaps the current batch's GPU work.
Batches are planned per chunk (longest first within the chunk, under the engine's token budget);
results come back in input order, equal to `Engine.embed`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from embedserve.engine import EmbeddingResult, Engine
from embedserve.inputs import Inputs, text_batch
from embedserve.planning import plan_batches
from embedserve.preparing import Prepared

if TYPE_CHECKING:
    from typing_extensions import Self  # typing's from Python 3.11

TOKENIZE_THREADS = 4
IN_FLIGHT = 2
# Texts per tokenization chunk: large enough to hold several batches of a GPU token budget
# (16,384 padded tokens ≈ 300 texts of the realistic mix), small enough that the model starts
# while later chunks are still being tokenized.
CHUNK_TEXTS = 1_024


class Pipeline:
    """Runs `engine` with tokenization ahead of the model. Thread-safe; `close()` when done, or
    use it in a `with` block."""

    def __init__(
        self,
        engine: Engine,
        *,
        tokenize_threads: int = TOKENIZE_THREADS,
        in_flight: int = IN_FLIGHT,
        chunk_texts: int = CHUNK_TEXTS,
    ) -> None:
        if tokenize_threads < 1 or in_flight < 1 or chunk_texts < 1:
            raise ValueError("tokenize_threads, in_flight and chunk_texts must be at least 1")
        self.engine = engine
        self.chunk_texts = chunk_texts
        self._tokenizers = ThreadPoolExecutor(
            tokenize_threads, thread_name_prefix="embedserve-tokenize"
        )
        self._model = ThreadPoolExecutor(in_flight, thread_name_prefix="embedserve-model")
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self._tokenizers.shutdown(wait=True)
        self._model.shutdown(wait=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def embed(
        self,
        texts: str | Sequence[str],
        *,
        dimensions: int | None = None,
        normalize: bool | None = None,
        truncate: bool = True,
        truncation_direction: str = "right",
        prompt_name: str | None = None,
    ) -> EmbeddingResult:
        """`Engine.embed` for a list of texts, pipelined; the same vectors in the same order."""
        if self.closed:
            # Not concurrent.futures' "cannot schedule new futures", which names no Pipeline.
            raise RuntimeError("this Pipeline is closed: make a new one to embed more")
        engine = self.engine
        engine.check_arguments(
            dimensions, truncation_direction, normalize=normalize, truncate=truncate
        )
        # A string is one text, as for engine.embed (list("abc") made three).
        texts = text_batch(texts)
        options = {
            "truncate": truncate,
            "truncation_direction": truncation_direction,
            "prompt_name": prompt_name,
        }
        starts = range(0, len(texts), self.chunk_texts)
        chunks = [
            self._tokenizers.submit(
                engine.prepare, Inputs(texts=texts[s : s + self.chunk_texts]), **options
            )
            for s in starts
        ]
        pooled = np.empty((len(texts), engine.model_info.dimension), dtype=np.float32)
        counts = np.empty(len(texts), dtype=np.int64)
        runs: list[tuple[np.ndarray, Future[np.ndarray]]] = []
        try:
            for start, chunk in zip(starts, chunks):
                try:
                    prepared: Prepared = chunk.result()
                except ValueError:
                    # Errors name the input by its index in the chunk: ask again over the whole
                    # list so the message names it by its index in the caller's list.
                    engine.prepare(Inputs(texts=texts), **options)
                    raise
                counts[start : start + len(prepared.sequences)] = prepared.token_counts
                sequences = prepared.sequences
                for group in plan_batches(prepared.token_counts, engine.max_batch_tokens):
                    batch = [sequences[i] for i in group]
                    runs.append((group + start, self._model.submit(engine.forward, batch)))
            for rows, run in runs:
                pooled[rows] = run.result()
        finally:
            for future in [*chunks, *(run for _, run in runs)]:
                future.cancel()
        vectors = engine.finish(pooled, dimensions=dimensions, normalize=normalize)
        return EmbeddingResult(np.ascontiguousarray(vectors), counts)
