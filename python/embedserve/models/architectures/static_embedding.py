"""sentence-transformers' StaticEmbedding (model2vec / static-retrieval folders): no
transformer, one token table whose rows nn.EmbeddingBag averages.

The graph only gathers each token's row; the engine's mask-aware mean pooling
then computes EmbeddingBag's mean over the real tokens, and Dense, Normalize and Matryoshka
cuts follow on the same path as for any other model. There is no config.json: the module's
folder holds model.safetensors (``embedding.weight``) and its own tokenizer.json.
"""

from __future__ import annotations

from embedserve.models.architectures.base import HIDDEN_STATE, Encoded
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.weights import Weights

NAME = "StaticEmbedding"
TABLE = "embedding.weight"


def build(g: GraphBuilder, w: Weights) -> Encoded:
    table = w.get(TABLE)
    if table.ndim != 2:
        raise ValueError(f"{w.source}: {TABLE} is {table.shape}, wanted (vocab, dimension)")
    g.op(
        "Gather", [g.weight(TABLE, table), g.input("input_ids")], HIDDEN_STATE, output=HIDDEN_STATE
    )
    # Declared, not read: padded positions gather row 0, which every pooling masks out, and
    # in-graph pooling (CUDA) finds the mask input it reads. Zeroing them here measured twice
    # as slow on the CPU (another pass over [batch, sequence, dimension]).
    g.input("attention_mask")
    return Encoded(HIDDEN_STATE, int(table.shape[1]))
