"""BGE-M3's ColBERT head: `colbert_linear.pt` (a linear layer hidden → hidden) over the final
token states, the first token (<s>) dropped, each vector L2-normalized; scores are the MaxSim
sum divided by the query's token count. FlagEmbedding's `BGEM3FlagModel` is the reference
(`_colbert_embedding`, `colbert_score`).

The encoder is the folder's ordinary embedder (`Engine`, its token states), shared with the
dense task when the server serves both; the head is read without torch
(`models.torch_checkpoint.read_torch_checkpoint`). `M3Colbert` has ColBERT's serving steps
(`prepare`, `forward`, `maxsim_scores`), so the server's token-vector and MaxSim jobs run it as they run a ColBERT.
Queries and documents are encoded alike (BGE-M3 has no markers).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from embedserve import _core
from embedserve.engine import Engine
from embedserve.errors import InputTooLongError
from embedserve.inputs import Inputs, check_flag, text_batch
from embedserve.late_interaction import maxsim
from embedserve.models.bge_m3 import COLBERT_LINEAR, read_linear
from embedserve.models.dense import DenseLayer
from embedserve.models.kind import LATE_INTERACTION
from embedserve.models.st_modules import ModelConfigError
from embedserve.planning import plan_batches
from embedserve.preparing import Prepared
from embedserve.reranker import _check_text, _check_texts

COLBERT_HEAD = COLBERT_LINEAR


def load_colbert_head(directory: Path) -> DenseLayer:
    path = directory / COLBERT_HEAD
    if not path.exists():
        raise ModelConfigError(f"{directory} has no {COLBERT_HEAD} (not a BGE-M3 folder)")
    weight, bias = read_linear(path)  # float32 → float64 is exact: the same vectors as before
    return DenseLayer(
        weight.astype(np.float64), None if bias is None else bias.astype(np.float64), "Identity"
    )


class M3Colbert:
    """BGE-M3's multi-vector output over an embedder loaded from the same folder."""

    kind = LATE_INTERACTION

    def __init__(self, engine: Engine, head: DenseLayer) -> None:
        engine.check_token_states()
        self.engine = engine
        self.head = head
        self.tokenizer = engine.tokenizer
        self.max_batch_tokens = engine.max_batch_tokens
        self.model_info = replace(
            engine.model_info,
            dimension=head.out_features,
            pooling="none",
            normalize=True,
            supports_dimensions=False,
        )

    @classmethod
    def from_pretrained(cls, spec: str | os.PathLike[str], **options: Any) -> M3Colbert:
        engine = Engine.from_pretrained(spec, **options)
        return cls(engine, load_colbert_head(engine.config.directory))

    # -- the steps, public so the server's batcher can run them separately --

    def prepare(
        self,
        texts: Sequence[str],
        *,
        is_query: bool = False,
        truncate: bool = True,
        start: int = 0,
        max_tokens: int | None = None,
    ) -> Prepared:
        """Each text's token ids, marked to keep their states (`is_query` changes nothing).
        `max_tokens` first keeps each text's first tokens, as `ColBERT.prepare` does."""
        inputs = Inputs(texts=list(texts))
        if max_tokens is not None:
            # Cut before the model's limit, so truncate=False allows it; token arrays take no
            # prompt, and BGE-M3 has none.
            content = self.tokenizer.content_ids(list(texts))
            inputs = Inputs(token_arrays=[ids[:max_tokens] for ids in content])
        try:
            part = self.engine.prepare(inputs, truncate=truncate)
        except InputTooLongError as exc:  # name the input by its index in the whole request
            if not start:
                raise
            raise InputTooLongError(start + exc.index, exc.tokens, exc.limit) from exc
        return part.keeping_states()

    def forward(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Each sequence's normalized head vectors (all tokens but the first) into its `states`;
        returns no pooled columns (the batcher's rows are empty, as a ColBERT's)."""
        self.engine.forward(sequences)  # the encoder's token states land on the sequences
        for seq in sequences:
            states = seq.states[1:]  # type: ignore[attr-defined]
            vectors = np.ascontiguousarray(self.head(states), dtype=np.float32)
            seq.states = _core.cut_and_normalize_(vectors, None, True)  # type: ignore[attr-defined]
        return np.empty((len(sequences), 0), dtype=np.float32)

    def maxsim_scores(self, query: np.ndarray, documents: Sequence[np.ndarray]) -> np.ndarray:
        """FlagEmbedding's colbert_score: MaxSim divided by the query's token count."""
        return maxsim(query, documents) / max(len(query), 1)

    # -- the whole thing --

    def encode(self, texts: str | Sequence[str], *, truncate: bool = True) -> list[np.ndarray]:
        """Normalized vectors [tokens - 1, hidden] of each text: every token after the first."""
        check_flag(truncate, "truncate")
        batch = text_batch(texts, "texts")
        sequences = self.prepare(batch, truncate=truncate).sequences
        lengths = np.fromiter((len(s) for s in sequences), np.int64, len(sequences))
        for group in plan_batches(lengths, self.max_batch_tokens):
            self.forward([sequences[i] for i in group])
        return [seq.states for seq in sequences]  # type: ignore[attr-defined]

    def score(self, query: str, documents: Sequence[str], *, truncate: bool = True) -> np.ndarray:
        """FlagEmbedding's colbert_score of `query` with each document: MaxSim / query tokens."""
        # As ColBERT.score: a string of documents is refused, not read one character a document.
        (q,) = self.encode([_check_text(query, "query")], truncate=truncate)
        docs = self.encode(_check_texts(documents, "documents"), truncate=truncate)
        return self.maxsim_scores(q, docs)
