"""Whole transformer layers in the two common arrangements, wired by tensor names: post-LN
encoders (BERT and its descendants: packed q/k/v, rotary or an additive position bias, RMSNorm,
GLU or a family's own feed-forward) and pre-norm decoders (Llama, Mistral, Qwen; Gemma wires
their attention and MLP under its own norms)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from embedserve.models.layers.attention import (
    Heads,
    HeadTransform,
    attention,
    padding_mask,
    structured_mask,
)
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.embeddings import tokens
from embedserve.models.layers.linear import linear, packed_qkv
from embedserve.models.layers.mlp import feed_forward, gated
from embedserve.models.layers.norms import layer_norm, rms_norm
from embedserve.models.layers.rotary import Rotary
from embedserve.models.weights import Weights


@dataclass(frozen=True)
class PostNormNames:
    """Where a post-LN (BERT-style) layer keeps its tensors, relative to the layer's prefix.

    q, k and v come from ``query``/``key``/``value``, or from ``qkv``, one packed
    [3·hidden, hidden] projection, where the checkpoint has it (GTE's pack_qkv) or where the
    family has no separate ones (NomicBERT's Wqkv)."""

    out: str
    attention_norm: str
    up: str
    down: str
    output_norm: str
    query: str | None = None
    key: str | None = None
    value: str | None = None
    qkv: str | None = None


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


@dataclass(frozen=True)
class EncoderDims:
    """The sizes a stack of post-LN layers is built with, read from each family's config."""

    hidden: int
    layers: int
    heads: Heads
    inner: int
    act: str
    eps: float


# A post-LN layer's feed-forward: (its input, the layer's index, its tensor prefix, its node
# scope) -> its output, before the residual.
FeedForward = Callable[[str, int, str, str], str]
# layer_norm or rms_norm: (g, w, prefix, x, name, size, eps, output=...) -> the normed value.
Norm = Callable[..., str]


def names_mlp(
    g: GraphBuilder,
    w: Weights,
    names: PostNormNames,
    dims: EncoderDims,
    *,
    glu: bool = False,
    gate_second: bool = False,
) -> FeedForward:
    """``feed_forward`` over ``names.up`` and ``names.down``: BERT's ``down(act(up(x)))``, biases
    required; with ``glu``, a GLU packed in ``up`` ([a | b], one [2·inner, hidden] matrix) with
    biases where the checkpoint has them: ``down(act(a) * b)`` (JinaBERT's gated_layers, no
    bias; its wo has one), or with ``gate_second`` ``down(a * act(b))`` (GTE's up_gate_proj,
    JinaBERT-code's up_gated_layer)."""
    return lambda x, n, prefix, scope: feed_forward(
        g,
        w,
        x,
        scope + "/mlp",
        prefix + names.up,
        prefix + names.down,
        dims.hidden,
        dims.inner,
        dims.act,
        None if glu else True,
        fused_gate=glu,
        gate_second=gate_second,
    )


def self_attention(
    g: GraphBuilder,
    w: Weights,
    x: str,
    mask: str,
    prefix: str,
    names: PostNormNames,
    heads: Heads,
    hidden: int,
    name: str,
    *,
    bias: str | None = None,
    rotary: Rotary | None = None,
    projection_bias: bool | None = True,
) -> str:
    """``names.out(attention(q, k, v))`` (see ``PostNormNames`` for where q, k and v come from).

    Three projections rather than one [h, 3h] MatMul where the checkpoint keeps them apart:
    ONNX Runtime's Attention fusion only recognises that form, and packs them into one GEMM
    itself."""
    p = prefix
    if names.qkv is not None and (names.query is None or w.has(p + names.qkv + ".weight")):
        q, k, v = packed_qkv(g, w, p + names.qkv, x, name, hidden, projection_bias)
    else:
        assert names.query is not None and names.key is not None and names.value is not None
        q = linear(
            g, w, p + names.query, x, name + "/query", (heads.width, hidden), projection_bias
        )
        k = linear(g, w, p + names.key, x, name + "/key", (heads.kv_width, hidden), projection_bias)
        v = linear(
            g, w, p + names.value, x, name + "/value", (heads.kv_width, hidden), projection_bias
        )
    context = attention(g, q, k, v, mask, heads, name + "/attention", bias=bias, rotary=rotary)
    return linear(
        g,
        w,
        p + names.out,
        context,
        name + "/attention_out",
        (hidden, heads.width),
        projection_bias,
    )


def post_norm_layer(
    g: GraphBuilder,
    w: Weights,
    x: str,
    mask: str,
    n: int,
    prefix: str,
    names: PostNormNames,
    dims: EncoderDims,
    mlp: FeedForward,
    *,
    norm: Norm = layer_norm,
    bias: str | None = None,
    rotary: Rotary | None = None,
    projection_bias: bool | None = True,
    output: str | None = None,
) -> str:
    """x = norm(x + attn(x)); x = norm(x + mlp(x)): BERT, RoBERTa, DistilBERT, MPNet, GTE,
    NomicBERT, JinaBERT."""
    name, hidden, eps = f"layer.{n}", dims.hidden, dims.eps
    projected = self_attention(
        g,
        w,
        x,
        mask,
        prefix,
        names,
        dims.heads,
        hidden,
        name,
        bias=bias,
        rotary=rotary,
        projection_bias=projection_bias,
    )
    residual = g.op("Add", [projected, x], name + "/attention_residual")
    x = norm(g, w, prefix + names.attention_norm, residual, name + "/attention_norm", hidden, eps)
    ff = mlp(x, n, prefix, name)
    residual = g.op("Add", [ff, x], name + "/output_residual")
    return norm(
        g,
        w,
        prefix + names.output_norm,
        residual,
        name + "/output_norm",
        hidden,
        eps,
        output=output,
    )


def post_norm_encoder(
    g: GraphBuilder,
    w: Weights,
    embedded: str,
    dims: EncoderDims,
    *,
    layer_prefix: str,
    names: PostNormNames,
    output: str,
    mlp: FeedForward | None = None,
    norm: Norm = layer_norm,
    embeddings_norm: str = "embeddings.LayerNorm",
    bias: Callable[[], str] | None = None,
    rotary: Rotary | None = None,
    projection_bias: bool | None = True,
) -> str:
    """The summed embeddings' LayerNorm (``embeddings_norm``; a LayerNorm whatever ``norm`` the
    layers use), then ``dims.layers`` post-LN layers (``{layer_prefix}{n}.``) over one padding
    mask; the last of them (the norm, with no layers) writes ``output``. ``mlp`` is each layer's
    feed-forward (BERT's, ``names_mlp``, unless given).

    ``bias`` builds an additive position bias shared by every layer (MPNet's relative positions,
    JinaBERT's ALiBi); it is built after the mask so that the graph's nodes stay in the order the
    families always emitted them.
    """
    hidden, layers, eps = dims.hidden, dims.layers, dims.eps
    x = layer_norm(
        g,
        w,
        embeddings_norm,
        embedded,
        "embeddings/layer_norm",
        hidden,
        eps,
        output=output if layers == 0 else None,
    )
    mask = padding_mask(g)
    shared_bias = bias() if bias is not None else None
    feed = mlp if mlp is not None else names_mlp(g, w, names, dims)
    for n in range(layers):
        x = post_norm_layer(
            g,
            w,
            x,
            mask,
            n,
            f"{layer_prefix}{n}.",
            names,
            dims,
            feed,
            norm=norm,
            bias=shared_bias,
            rotary=rotary,
            projection_bias=projection_bias,
            output=output if n == layers - 1 else None,
        )
    return x


@dataclass(frozen=True)
class DecoderDims:
    """The sizes a Llama-style decoder is built with, read from each family's config."""

    hidden: int
    heads: Heads
    inner: int
    act: str
    eps: float


def decoder_attention(
    g: GraphBuilder,
    w: Weights,
    h: str,
    mask: str,
    prefix: str,
    scope: str,
    dims: DecoderDims,
    rope: Rotary,
    *,
    q_norm: HeadTransform | None = None,
    k_norm: HeadTransform | None = None,
    scale: float | None = None,
) -> str:
    """``o_proj(attention(q_proj(h), k_proj(h), v_proj(h)))`` under Llama's names
    (``self_attn.*``) with rotary and GQA, biases where the checkpoint has them: Llama, Mistral,
    Qwen, Gemma."""
    hidden, heads = dims.hidden, dims.heads
    p = prefix + "self_attn."
    q = linear(g, w, p + "q_proj", h, scope + "/q", (heads.width, hidden), None)
    k = linear(g, w, p + "k_proj", h, scope + "/k", (heads.kv_width, hidden), None)
    v = linear(g, w, p + "v_proj", h, scope + "/v", (heads.kv_width, hidden), None)
    context = attention(
        g,
        q,
        k,
        v,
        mask,
        heads,
        scope + "/attention",
        rotary=rope,
        q_norm=q_norm,
        k_norm=k_norm,
        scale=scale,
    )
    return linear(g, w, p + "o_proj", context, scope + "/o", (hidden, heads.width), None)


def decoder_mlp(
    g: GraphBuilder, w: Weights, h: str, prefix: str, scope: str, dims: DecoderDims
) -> str:
    """``down_proj(act(gate_proj(h)) * up_proj(h))`` under Llama's names (``mlp.*``): SwiGLU
    (Llama, Mistral, Qwen), GeGLU (Gemma), biases where the checkpoint has them."""
    p = prefix + "mlp."
    return gated(
        g,
        w,
        h,
        scope + "/mlp",
        p + "gate_proj",
        p + "up_proj",
        p + "down_proj",
        dims.hidden,
        dims.inner,
        dims.act,
        None,
    )


def pre_norm_decoder(
    g: GraphBuilder,
    w: Weights,
    dims: DecoderDims,
    windows: list[int | None],
    rope: Rotary,
    *,
    output: str,
    head_norms: bool = False,
) -> str:
    """Llama's stack over ``embed_tokens``: per layer x += attn(RMSNorm(x)); x += mlp(RMSNorm(x))
    with causal attention (a causal sliding window where ``windows[n]`` is set), rotary, GQA
    and SwiGLU, then the final ``norm`` writing ``output``. Biases are used where the checkpoint
    has them (Qwen2's q/k/v, Llama's attention_bias / mlp_bias). ``head_norms`` adds Qwen3's
    per-head RMSNorm of q and k (``self_attn.q_norm`` / ``k_norm``)."""
    hidden, heads, eps = dims.hidden, dims.heads, dims.eps

    def head_norm(prefix: str) -> HeadTransform | None:
        if not head_norms:
            return None
        return lambda gb, x, name: rms_norm(gb, w, prefix, x, name, heads.head_dim, eps)

    x = tokens(g, w, "embed_tokens", "embed_tokens", hidden)
    for n, window in enumerate(windows):
        p, scope = f"layers.{n}.", f"layer.{n}"
        mask = structured_mask(g, causal=True, window=window)
        h = rms_norm(g, w, p + "input_layernorm", x, scope + "/input_norm", hidden, eps)
        out = decoder_attention(
            g,
            w,
            h,
            mask,
            p,
            scope,
            dims,
            rope,
            q_norm=head_norm(p + "self_attn.q_norm"),
            k_norm=head_norm(p + "self_attn.k_norm"),
        )
        x = g.op("Add", [x, out], scope + "/attention_residual")
        h = rms_norm(g, w, p + "post_attention_layernorm", x, scope + "/mlp_norm", hidden, eps)
        x = g.op("Add", [x, decoder_mlp(g, w, h, p, scope, dims)], scope + "/mlp_residual")
    return rms_norm(g, w, "norm", x, "norm", hidden, eps, output=output)
