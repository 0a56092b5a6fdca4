"""Whole transformer layers in the two common arrangements, wired by tensor names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from embedserve.models.layers.attention import Heads, attention, padding_mask
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


@dataclass(frozen=True)
class EncoderDims:
    """The sizes a stack of post-LN layers is built with, read from each family's config."""

    hidden: int
    layers: int
    heads: Heads
    inner: int
    act: str
    eps: float


def post_norm_encoder(
    g: GraphBuilder,
    w: Weights,
    embedded: str,
    dims: EncoderDims,
    *,
    layer_prefix: str,
    names: PostNormNames,
    output: str,
    bias: Callable[[], str] | None = None,
) -> str:
    """The summed embeddings' LayerNorm (``embeddings.LayerNorm``), then ``dims.layers`` post-LN
    layers (``{layer_prefix}{n}.``) over one padding mask; the last of them (the norm, with no
    layers) writes ``output``.

    ``bias`` builds an additive position bias shared by every layer (MPNet); it is built after
    the mask so that the graph's nodes stay in the order the families always emitted them.
    """
    hidden, layers, eps = dims.hidden, dims.layers, dims.eps
    x = layer_norm(
        g,
        w,
        "embeddings.LayerNorm",
        embedded,
        "embeddings/layer_norm",
        hidden,
        eps,
        output=output if layers == 0 else None,
    )
    mask = padding_mask(g)
    shared_bias = bias() if bias is not None else None
    for n in range(layers):
        x = post_norm_layer(
            g,
            w,
            x,
            mask,
            f"{layer_prefix}{n}.",
            names,
            dims.heads,
            hidden,
            dims.inner,
            dims.act,
            eps,
            name=f"layer.{n}",
            bias=shared_bias,
            output=output if n == layers - 1 else None,
        )
    return x
