"""Token, token-type and learned absolute position embeddings."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from onnx import TensorProto

from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.weights import Weights


def sequence_scalar(g: GraphBuilder) -> str:
    """input_ids' sequence length as an int64 scalar (for Range)."""
    if "seq/length" not in g.shared:
        shape = g.op("Shape", [g.input("input_ids")], "seq/shape")
        g.shared["seq/length"] = g.op("Gather", [shape, g.const(1, np.int64)], "seq/length", axis=0)
    return g.shared["seq/length"]


def query_key_positions(g: GraphBuilder, scope: str) -> tuple[str, str]:
    """Positions 0..sequence-1 as a [sequence, 1] column (queries) and a [1, sequence] row (keys):
    subtracted, they broadcast to the [q, k] offsets that masks and relative biases read."""
    positions = g.op(
        "Range",
        [g.const(0, np.int64), sequence_scalar(g), g.const(1, np.int64)],
        scope + "/positions",
    )
    rows = g.op("Unsqueeze", [positions, g.const([1], np.int64)], scope + "/queries")
    cols = g.op("Unsqueeze", [positions, g.const([0], np.int64)], scope + "/keys")
    return rows, cols


def sequence_length(g: GraphBuilder) -> str:
    """input_ids' sequence length as a 1-element int64 tensor (for Slice ends)."""
    if "seq/end" not in g.shared:
        g.shared["seq/end"] = g.op(
            "Unsqueeze", [sequence_scalar(g), g.const([0], np.int64)], "seq/end"
        )
    return g.shared["seq/end"]


def first_rows(g: GraphBuilder, table: str, name: str, axis: int = 0) -> str:
    """``table[:sequence]`` along ``axis`` (tables sized for the longest sequence)."""
    return g.op(
        "Slice",
        [table, g.const([0], np.int64), sequence_length(g), g.const([axis], np.int64)],
        name,
    )


def tokens(g: GraphBuilder, w: Weights, prefix: str, name: str, hidden: int) -> str:
    """Gather from the word-embedding table ``prefix.weight`` [vocab, hidden]."""
    table = w.get(prefix + ".weight")
    if table.ndim != 2 or table.shape[1] != hidden:
        raise ValueError(f"{w.source}: {prefix}.weight is {table.shape}, wanted (vocab, {hidden})")
    return g.op("Gather", [g.weight(prefix + ".weight", table), g.input("input_ids")], name)


def token_types(
    g: GraphBuilder, w: Weights, prefix: str, name: str, types: int, hidden: int
) -> str:
    """Token-type embeddings: gathered by ``token_type_ids`` when the model has several
    types; with a single type (RoBERTa) every token adds row 0, so no input is needed."""
    table = w.get(prefix + ".weight", (types, hidden))
    if types > 1:
        return g.op(
            "Gather", [g.weight(prefix + ".weight", table), g.input("token_type_ids")], name
        )
    return g.weight(prefix + ".row0", table[0])


def positions_from_zero(
    g: GraphBuilder, w: Weights, prefix: str, name: str, max_positions: int, hidden: int
) -> str:
    """BERT / DistilBERT positions 0..sequence-1.

    Position ids are sliced from a [1, max_positions] constant by input_ids' length: the exact
    shape ONNX Runtime's EmbedLayerNormalization fusion looks for.
    """
    table = g.weight(prefix + ".weight", w.get(prefix + ".weight", (max_positions, hidden)))
    ids = g.weight(prefix + ".ids", np.arange(max_positions, dtype=np.int64)[None, :])
    sliced = g.op(
        "Slice",
        [
            ids,
            g.const([0], np.int64),
            sequence_length(g),
            g.const([1], np.int64),
            g.const([1], np.int64),
        ],
        name + "/ids",
    )
    return g.op("Gather", [table, sliced], name)


def positions_after_padding_idx(
    g: GraphBuilder,
    w: Weights,
    prefix: str,
    name: str,
    max_positions: int,
    hidden: int,
    padding_idx: int,
) -> str:
    """RoBERTa / XLM-R / CamemBERT / MPNet positions: ``padding_idx + 1`` onwards for tokens
    that are not the pad id, ``padding_idx`` for pads (transformers'
    create_position_ids_from_input_ids). Counted from input_ids, not attention_mask, as
    transformers does."""
    table = g.weight(prefix + ".weight", w.get(prefix + ".weight", (max_positions, hidden)))
    is_pad = g.op("Equal", [g.input("input_ids"), g.const(padding_idx, np.int64)], name + "/is_pad")
    keep = g.op(
        "Cast", [g.op("Not", [is_pad], name + "/not_pad")], name + "/keep", to=TensorProto.INT64
    )
    counted = g.op("CumSum", [keep, g.const(1, np.int64)], name + "/cumsum")
    counted = g.op("Mul", [counted, keep], name + "/masked")
    ids = g.op("Add", [counted, g.const(padding_idx, np.int64)], name + "/ids")
    return g.op("Gather", [table, ids], name)


# Positions for [batch, sequence] input_ids: (graph, weights, table prefix, scope, rows, hidden).
Positions = Callable[[GraphBuilder, Weights, str, str, int, int], str]


def bert_embeddings(
    g: GraphBuilder,
    w: Weights,
    hidden: int,
    positions: Positions | None,
    max_positions: int,
    type_vocab: int = 0,
) -> str:
    """Word + token-type (when ``type_vocab`` is above 0) + position embeddings under BERT's
    tensor names (``embeddings.*``), before their LayerNorm: BERT, RoBERTa, DistilBERT, MPNet;
    GTE, NomicBERT and JinaBERT with ``positions=None`` where rotary or ALiBi number the tokens
    inside attention instead."""
    x = tokens(g, w, "embeddings.word_embeddings", "embeddings/word", hidden)
    if type_vocab > 0:
        types = token_types(
            g, w, "embeddings.token_type_embeddings", "embeddings/token_type", type_vocab, hidden
        )
        x = g.op("Add", [x, types], "embeddings/add_token_type")
    if positions is None:
        return x
    pos = positions(
        g, w, "embeddings.position_embeddings", "embeddings/position", max_positions, hidden
    )
    return g.op("Add", [x, pos], "embeddings/add_position")
