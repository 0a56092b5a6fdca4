"""T5's encoder (T5EncoderModel, and the encoder of T5Model checkpoints): sentence-t5, GTR.

Pre-RMSNorm layers without biases, unscaled attention scores plus one relative-position bias
(T5's bidirectional buckets) that layer 0 owns and every layer adds, and a ReLU feed-forward
(original T5) or a gated one (``feed_forward_proj`` "gated-gelu": T5 v1.1, GELU-tanh).
"""

from __future__ import annotations

import numpy as np

from embedserve.models.architectures.base import HIDDEN_STATE, Encoded, Family
from embedserve.models.architectures.mpnet import relative_position_bucket
from embedserve.models.hf_config import HFConfig, UnsupportedArchitectureError
from embedserve.models.layers.attention import Heads, attention, padding_mask
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.embeddings import query_key_positions
from embedserve.models.layers.linear import check_activation, linear
from embedserve.models.layers.mlp import feed_forward, gated
from embedserve.models.layers.norms import rms_norm
from embedserve.models.weights import Weights

BIAS_TABLE = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"


def feed_forward_kind(c: HFConfig) -> tuple[str, bool]:
    """(activation, gated) from ``feed_forward_proj``, as T5Config derives them: "relu",
    "gated-gelu" (which means GELU-tanh), "gated-silu", ..."""
    proj = str(c.get("feed_forward_proj", default="relu"))
    parts = proj.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
        raise UnsupportedArchitectureError(f"{c.path}: feed_forward_proj {proj!r} is not valid")
    act = "gelu_new" if proj == "gated-gelu" else parts[-1]
    return check_activation(act, c.path), len(parts) == 2


def position_bias(g: GraphBuilder, w: Weights, c: HFConfig, num_heads: int) -> str:
    """[1, heads, seq, seq] bias for distance key - query. Distances past max_distance share
    the last bucket, so a table over [-max_distance, max_distance] serves any length."""
    buckets = c.int("relative_attention_num_buckets", default=32)
    max_distance = c.int("relative_attention_max_distance", default=128)
    table = w.get(BIAS_TABLE, (buckets, num_heads))
    distances = np.arange(-max_distance, max_distance + 1, dtype=np.int64)
    by_distance = g.weight(
        "position_bias/by_distance",
        table[relative_position_bucket(distances, buckets, max_distance)],
    )
    rows, cols = query_key_positions(g, "position_bias")
    distance = g.op("Sub", [cols, rows], "position_bias/distance")
    clipped = g.op(
        "Clip",
        [distance, g.const(-max_distance, np.int64), g.const(max_distance, np.int64)],
        "position_bias/clipped",
    )
    index = g.op("Add", [clipped, g.const(max_distance, np.int64)], "position_bias/index")
    bias = g.op("Gather", [by_distance, index], "position_bias/gather")  # [seq, seq, heads]
    bias = g.op("Transpose", [bias], "position_bias/heads_first", perm=[2, 0, 1])
    return g.op("Unsqueeze", [bias, g.const([0], np.int64)], "position_bias")


def build(g: GraphBuilder, c: HFConfig, w: Weights) -> Encoded:
    hidden = c.int("d_model")
    layers = c.int("num_layers")
    num_heads = c.count("num_heads")
    heads = Heads(num_heads, num_heads, c.count("d_kv"))
    inner = c.int("d_ff")
    eps = c.float("layer_norm_epsilon", default=1e-6)
    act, is_gated = feed_forward_kind(c)
    # T5EncoderModel ties encoder.embed_tokens to shared; a checkpoint stores either name.
    embed = "shared" if w.has("shared.weight") else "encoder.embed_tokens"
    table = w.get(embed + ".weight")
    if table.ndim != 2 or table.shape[1] != hidden:
        raise ValueError(f"{w.source}: {embed}.weight is {table.shape}, wanted (vocab, {hidden})")
    x = g.op("Gather", [g.weight(embed + ".weight", table), g.input("input_ids")], "embeddings")
    mask = padding_mask(g)
    bias = position_bias(g, w, c, num_heads)
    for n in range(layers):
        p, name = f"encoder.block.{n}.layer.", f"layer.{n}"
        h = rms_norm(g, w, p + "0.layer_norm", x, name + "/attention_norm", hidden, eps)
        qkv = [
            linear(g, w, f"{p}0.SelfAttention.{m}", h, f"{name}/{m}", (heads.width, hidden), False)
            for m in "qkv"
        ]
        # T5 folds 1/sqrt(d) into its initialisation: scores are not scaled.
        context = attention(g, *qkv, mask, heads, name + "/attention", bias=bias, scale=1.0)
        out = linear(
            g, w, p + "0.SelfAttention.o", context, name + "/o", (hidden, heads.width), False
        )
        x = g.op("Add", [x, out], name + "/attention_residual")
        h = rms_norm(g, w, p + "1.layer_norm", x, name + "/mlp_norm", hidden, eps)
        ff = p + "1.DenseReluDense."
        if is_gated:
            h = gated(
                g, w, h, name + "/mlp", ff + "wi_0", ff + "wi_1", ff + "wo", hidden, inner, act
            )
        else:
            h = feed_forward(
                g, w, h, name + "/mlp", ff + "wi", ff + "wo", hidden, inner, act, False
            )
        x = g.op("Add", [x, h], name + "/mlp_residual")
    rms_norm(g, w, "encoder.final_layer_norm", x, "final_norm", hidden, eps, output=HIDDEN_STATE)
    return Encoded(HIDDEN_STATE, hidden)


FAMILY = Family(
    name="t5",
    model_types=("t5",),
    classes=("T5",),
    anchor="encoder.final_layer_norm.weight",
    build=build,
)
