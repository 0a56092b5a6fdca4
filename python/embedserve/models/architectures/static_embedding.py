"""sentence-transformers' StaticEmbedding (model2vec / static-retrieval folders): no
transformer, one token table whose rows nn.EmbeddingBag averages.

The graph only gathers each token's row (padded positions zeroed); the engine's mean pooling
then computes EmbeddingBag's mean over the real tokens, and Dense, Normalize and Matryoshka
cuts follow on the same path as for any other model. There is no config.json: the module's
folder holds model.safetensors (``embedding.weight``) and its own tokenizer.json.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from embedserve.models.architectures.base import HIDDEN_STATE, Encoded
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.weights import Weights

NAME = "StaticEmbedding"
TABLE = "embedding.weight"


def build(g: GraphBuilder, w: Weights) -> Encoded:
    table = w.get(TABLE)
    if table.ndim != 2:
        raise ValueError(f"{w.source}: {TABLE} is {table.shape}, wanted (vocab, dimension)")
    rows = g.op("Gather", [g.weight(TABLE, table), g.input("input_ids")], "static/rows")
    # Zeroing padded rows declares attention_mask, which in-graph pooling (CUDA) reads.
    mask = g.op("Cast", [g.input("attention_mask")], "static/mask", to=TensorProto.FLOAT)
    mask = g.op("Unsqueeze", [mask, g.const([-1], np.int64)], "static/mask_3d")
    g.op("Mul", [rows, mask], HIDDEN_STATE, output=HIDDEN_STATE)
    return Encoded(HIDDEN_STATE, int(table.shape[1]))
