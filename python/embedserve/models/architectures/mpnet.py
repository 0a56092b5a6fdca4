"""MPNet (MPNetModel, and MPNetForMaskedLM checkpoints read as the base model): RoBERTa-style
positions plus a relative-position bias shared by every layer."""

from __future__ import annotations

import math
from functools import partial

import numpy as np

from embedserve.models.architectures.base import HIDDEN_STATE, Encoded, Family
from embedserve.models.architectures.bert import encoder_dims
from embedserve.models.hf_config import HFConfig
from embedserve.models.layers.blocks import PostNormNames, post_norm_encoder
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.embeddings import (
    bert_embeddings,
    positions_after_padding_idx,
    query_key_positions,
)
from embedserve.models.weights import Weights

PADDING_IDX = 1  # hard-coded in transformers' MPNetEmbeddings, whatever pad_token_id says
# transformers calls relative_position_bucket with these defaults, not the config's values.
NUM_BUCKETS = 32
MAX_DISTANCE = 128

NAMES = PostNormNames(
    query="attention.attn.q",
    key="attention.attn.k",
    value="attention.attn.v",
    out="attention.attn.o",
    attention_norm="attention.LayerNorm",
    up="intermediate.dense",
    down="output.dense",
    output_norm="output.LayerNorm",
)


def relative_position_bucket(
    relative: np.ndarray, num_buckets: int = NUM_BUCKETS, max_distance: int = MAX_DISTANCE
) -> np.ndarray:
    """transformers' MPNetEncoder.relative_position_bucket (T5's bidirectional
    _relative_position_bucket), for distances key - query, in float32 like torch."""
    half = num_buckets // 2
    n = -relative
    ret = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    max_exact = half // 2
    is_small = n < max_exact
    with np.errstate(divide="ignore"):
        scaled = (
            np.log(n.astype(np.float32) / np.float32(max_exact))
            / np.float32(math.log(max_distance / max_exact))
            * np.float32(half - max_exact)
        )
    large = max_exact + np.where(is_small, 0, scaled).astype(np.int64)
    large = np.minimum(large, half - 1)
    return ret + np.where(is_small, n, large)


def position_bias(g: GraphBuilder, w: Weights, max_positions: int, num_heads: int) -> str:
    """[1, heads, sequence, sequence] bias for distance key - query, from a constant table
    indexed by distance + max_positions - 1 (the buckets depend on nothing else)."""
    table = w.get("encoder.relative_attention_bias.weight")
    if table.shape[1] != num_heads or table.shape[0] < NUM_BUCKETS:
        raise ValueError(
            f"{w.source}: encoder.relative_attention_bias.weight is {table.shape}, wanted "
            f"({NUM_BUCKETS}, {num_heads})"
        )
    distances = np.arange(-(max_positions - 1), max_positions, dtype=np.int64)
    by_distance = g.weight(
        "encoder.relative_attention_bias.by_distance",
        table[relative_position_bucket(distances)],
    )
    rows, cols = query_key_positions(g, "position_bias")
    distance = g.op("Sub", [cols, rows], "position_bias/distance")
    index = g.op("Add", [distance, g.const(max_positions - 1, np.int64)], "position_bias/index")
    bias = g.op("Gather", [by_distance, index], "position_bias/gather")  # [seq, seq, heads]
    bias = g.op("Transpose", [bias], "position_bias/heads_first", perm=[2, 0, 1])
    return g.op("Unsqueeze", [bias, g.const([0], np.int64)], "position_bias")


def build(g: GraphBuilder, c: HFConfig, w: Weights) -> Encoded:
    dims = encoder_dims(c, c.float("layer_norm_eps", default=1e-12))
    max_positions = c.int("max_position_embeddings", default=514)
    positions = partial(positions_after_padding_idx, padding_idx=PADDING_IDX)
    x = bert_embeddings(g, w, dims.hidden, positions, max_positions)
    post_norm_encoder(
        g,
        w,
        x,
        dims,
        layer_prefix="encoder.layer.",
        names=NAMES,
        output=HIDDEN_STATE,
        bias=lambda: position_bias(g, w, max_positions, dims.heads.num_heads),
    )
    return Encoded(HIDDEN_STATE, dims.hidden)


FAMILY = Family(
    name="mpnet",
    model_types=("mpnet",),
    classes=("MPNet",),
    anchor="embeddings.word_embeddings.weight",
    build=build,
    first_position=lambda c: PADDING_IDX + 1,
)
