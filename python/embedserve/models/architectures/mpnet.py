"""MPNet (MPNetModel, and MPNetForMaskedLM checkpoints read as the base model): RoBERTa-style
positions plus a relative-position bias shared by every layer."""

from __future__ import annotations

import math

import numpy as np

from embedserve.models.architectures.base import HIDDEN_STATE, Encoded, Family
from embedserve.models.hf_config import HFConfig
from embedserve.models.layers.attention import Heads, padding_mask
from embedserve.models.layers.blocks import PostNormNames, post_norm_layer
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.embeddings import (
    positions_after_padding_idx,
    sequence_scalar,
    tokens,
)
from embedserve.models.layers.linear import check_activation
from embedserve.models.layers.norms import layer_norm
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


def relative_position_bucket(relative: np.ndarray) -> np.ndarray:
    """transformers' MPNetEncoder.relative_position_bucket, in float32 like torch."""
    half = NUM_BUCKETS // 2
    n = -relative
    ret = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    max_exact = half // 2
    is_small = n < max_exact
    with np.errstate(divide="ignore"):
        scaled = (
            np.log(n.astype(np.float32) / np.float32(max_exact))
            / np.float32(math.log(MAX_DISTANCE / max_exact))
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
    positions = g.op(
        "Range",
        [g.const(0, np.int64), sequence_scalar(g), g.const(1, np.int64)],
        "position_bias/positions",
    )
    rows = g.op("Unsqueeze", [positions, g.const([1], np.int64)], "position_bias/queries")
    cols = g.op("Unsqueeze", [positions, g.const([0], np.int64)], "position_bias/keys")
    distance = g.op("Sub", [cols, rows], "position_bias/distance")
    index = g.op("Add", [distance, g.const(max_positions - 1, np.int64)], "position_bias/index")
    bias = g.op("Gather", [by_distance, index], "position_bias/gather")  # [seq, seq, heads]
    bias = g.op("Transpose", [bias], "position_bias/heads_first", perm=[2, 0, 1])
    return g.op("Unsqueeze", [bias, g.const([0], np.int64)], "position_bias")


def build(g: GraphBuilder, c: HFConfig, w: Weights) -> Encoded:
    hidden = c.int("hidden_size")
    layers = c.int("num_hidden_layers")
    num_heads = c.int("num_attention_heads")
    heads = Heads(num_heads, num_heads, hidden // num_heads)
    inner = c.int("intermediate_size")
    eps = c.float("layer_norm_eps", default=1e-12)
    act = check_activation(c.get("hidden_act", default="gelu"), c.path)
    max_positions = c.int("max_position_embeddings", default=514)

    x = tokens(g, w, "embeddings.word_embeddings", "embeddings/word", hidden)
    pos = positions_after_padding_idx(
        g,
        w,
        "embeddings.position_embeddings",
        "embeddings/position",
        max_positions,
        hidden,
        PADDING_IDX,
    )
    x = g.op("Add", [x, pos], "embeddings/add_position")
    x = layer_norm(
        g,
        w,
        "embeddings.LayerNorm",
        x,
        "embeddings/layer_norm",
        hidden,
        eps,
        output=HIDDEN_STATE if layers == 0 else None,
    )
    mask = padding_mask(g)
    bias = position_bias(g, w, max_positions, num_heads)
    for n in range(layers):
        x = post_norm_layer(
            g,
            w,
            x,
            mask,
            f"encoder.layer.{n}.",
            NAMES,
            heads,
            hidden,
            inner,
            act,
            eps,
            name=f"layer.{n}",
            bias=bias,
            output=HIDDEN_STATE if n == layers - 1 else None,
        )
    return Encoded(HIDDEN_STATE, hidden)


FAMILY = Family(
    name="mpnet",
    model_types=("mpnet",),
    classes=("MPNet",),
    anchor="embeddings.word_embeddings.weight",
    build=build,
)
