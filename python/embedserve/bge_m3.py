"""BGE-M3's ColBERT head: `colbert_linear.pt` (a linear layer hidden → hidden) over the final
token states, the first token (<s>) dropped, each vector L2-normalized; scores are the MaxSim
sum divided by the query's token count. FlagEmbedding's `BGEM3FlagModel` is the reference
(`_colbert_embedding`, `colbert_score`).

The encoder is the folder's ordinary embedder (`Engine`, its token states from `embed_all`);
the head is read without torch (`models.dense.read_torch_zip`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedserve import _core
from embedserve.engine import Engine
from embedserve.late_interaction import maxsim
from embedserve.models.dense import DenseLayer, read_torch_zip
from embedserve.models.st_modules import ModelConfigError

COLBERT_HEAD = "colbert_linear.pt"


def has_colbert_head(directory: Path) -> bool:
    return (directory / COLBERT_HEAD).exists()


def load_colbert_head(directory: Path) -> DenseLayer:
    path = directory / COLBERT_HEAD
    if not path.exists():
        raise ModelConfigError(f"{directory} has no {COLBERT_HEAD} (not a BGE-M3 folder)")
    tensors = read_torch_zip(path)
    weight, bias = tensors.get("weight"), tensors.get("bias")
    if weight is None or weight.ndim != 2:
        raise ModelConfigError(f"{path}: no 2-D weight")
    return DenseLayer(
        weight.astype(np.float64), None if bias is None else bias.astype(np.float64), "Identity"
    )


class M3Colbert:
    """BGE-M3's multi-vector output over an embedder loaded from the same folder."""

    def __init__(self, engine: Engine, head: DenseLayer) -> None:
        self.engine = engine
        self.head = head

    @classmethod
    def from_pretrained(cls, spec: str | os.PathLike[str], **options: Any) -> M3Colbert:
        engine = Engine.from_pretrained(spec, **options)
        return cls(engine, load_colbert_head(engine.config.directory))

    def encode(self, texts: str | Sequence[str], *, truncate: bool = True) -> list[np.ndarray]:
        """Normalized vectors [tokens - 1, hidden] of each text: every token after the first."""
        out = []
        for states in self.engine.embed_all(texts, truncate=truncate):
            vectors = np.ascontiguousarray(self.head(states[1:]), dtype=np.float32)
            out.append(_core.cut_and_normalize_(vectors, None, True))
        return out

    def score(self, query: str, documents: Sequence[str], *, truncate: bool = True) -> np.ndarray:
        """FlagEmbedding's colbert_score of `query` with each document: MaxSim / query tokens."""
        (q,) = self.encode([query], truncate=truncate)
        return maxsim(q, self.encode(list(documents), truncate=truncate)) / max(len(q), 1)
