"""Whole transformer layers in the two common arrangements, wired by tensor names."""

from __future__ import annotations

from dataclasses import dataclass

from embedserve.models.layers.attention import Heads, attention
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.linear import linear
from embedserve.models.layers.mlp import feed_forward
from embedserve.models.layers.norms import layer_norm
from embedserve.models.weights import Weights


@dataclass(frozen=True)
class PostNormNames:
    """Where a post-LN (BERT-style) layer keeps its tensors, relative to the layer's prefix."""

    query: str
    key: str
    value: str
    out: str
    attention_norm: str
    up: str
    down: str
    output_norm: str


BERT_NAMES = PostNormNames(
    query="attention.self.query",
    key="attention.self.key",
    value="attention.self.value",
    out="attention.output.dense",
    attention_norm="attention.output.LayerNorm",
    up="intermediate.dense",
    down="output.dense",
    output_norm="output.LayerNorm",
)


def post_norm_layer(
    g: GraphBuilder,
    w: Weights,
    x: str,
    mask: str,
    prefix: str,
    names: PostNormNames,
    heads: Heads,
    hidden: int,
    inner: int,
    act: str,
    eps: float,
    name: str,
    bias: str | None = None,
    output: str | None = None,
) -> str:
    """x = LN(x + attn(x)); x = LN(x + mlp(x)) — BERT, RoBERTa, DistilBERT, MPNet.

    Q, K and V stay three projections rather than one [h, 3h] MatMul: ONNX Runtime's
    Attention fusion only recognises this form, and packs them into one GEMM itself.
    """
    p = prefix
    q = linear(g, w, p + names.query, x, name + "/query", (heads.width, hidden))
    k = linear(g, w, p + names.key, x, name + "/key", (heads.kv_width, hidden))
    v = linear(g, w, p + names.value, x, name + "/value", (heads.kv_width, hidden))
    context = attention(g, q, k, v, mask, heads, name + "/attention", bias=bias)
    projected = linear(g, w, p + names.out, context, name + "/attention_out", (hidden, heads.width))
    residual = g.op("Add", [projected, x], name + "/attention_residual")
    x = layer_norm(g, w, p + names.attention_norm, residual, name + "/attention_norm", hidden, eps)
    ff = feed_forward(g, w, x, name + "/mlp", p + names.up, p + names.down, hidden, inner, act)
    residual = g.op("Add", [ff, x], name + "/output_residual")
    return layer_norm(
        g, w, p + names.output_norm, residual, name + "/output_norm", hidden, eps, output=output
    )
