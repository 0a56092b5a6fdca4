"""JinaBERT (jina-embeddings-v2 base/small, remote code ``jinaai/jina-bert-implementation``):
post-LN BERT with ALiBi instead of position embeddings and a GLU feed-forward (GeGLU or ReGLU:
``wo(act(a) * b)`` for [a | b] = gated_layers(x), then its own LayerNorm).

jina-embeddings-v2-base-code (``jinaai/jina-bert-v2-qk-post-norm``) adds LayerNorms on q and k
(over the whole width), a second norm after the attention block (``layer_norm_1``) and a GLU
that gates the second half (``up_gated_layer``, ``down_layer``, then ``layer_norm_2``).

Its config.json says model_type "bert", so the family claims it by its remote code or its
``JinaBert*`` class, and by ALiBi, which transformers' BERT does not have."""

from __future__ import annotations

import json

from embedserve.models.architectures.base import HIDDEN_STATE, Encoded, Family, attention_heads
from embedserve.models.hf_config import HFConfig, UnsupportedArchitectureError
from embedserve.models.layers.attention import Heads, alibi, attention, padding_mask
from embedserve.models.layers.blocks import BERT_NAMES, post_norm_layer
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.embeddings import positions_from_zero, token_types, tokens
from embedserve.models.layers.linear import check_activation, linear
from embedserve.models.layers.mlp import feed_forward
from embedserve.models.layers.norms import layer_norm
from embedserve.models.weights import Weights

# feed_forward_type -> the activation JinaBertGLUMLP applies to the first half.
GLU = {"geglu": "gelu", "reglu": "relu"}
# jina-embeddings-v2-base-code's remote code: q/k LayerNorms and other tensor names.
QK_POST_NORM = "jina-bert-v2-qk-post-norm"
QK_NORM_ANCHOR = "encoder.layer.0.attention.self.layer_norm_q.weight"


def claims(c: HFConfig) -> bool:
    remote = json.dumps(c.raw.get("auto_map") or {})
    return (
        "jina-bert" in remote
        or any(a.startswith("JinaBert") for a in c.architectures)
        or c.raw.get("position_embedding_type") == "alibi"
    )


def _qk_post_norm_layer(
    g: GraphBuilder,
    w: Weights,
    x: str,
    mask: str,
    bias: str | None,
    p: str,
    scope: str,
    heads: Heads,
    inner: int,
    act: str,
    eps: float,
    output: str | None,
) -> str:
    """JinaCodeBertLayer: q = LN(q), k = LN(k); h = LN_out(dense(attn) + x);
    h = LN_1(h + x); out = LN_2(down(a * act(b)) + h) for [a | b] = up_gated_layer(h)."""
    hidden = heads.width
    s = p + "attention.self."
    q = linear(g, w, s + "query", x, scope + "/query", (hidden, hidden))
    q = layer_norm(g, w, s + "layer_norm_q", q, scope + "/query_norm", hidden, eps)
    k = linear(g, w, s + "key", x, scope + "/key", (hidden, hidden))
    k = layer_norm(g, w, s + "layer_norm_k", k, scope + "/key_norm", hidden, eps)
    v = linear(g, w, s + "value", x, scope + "/value", (hidden, hidden))
    context = attention(g, q, k, v, mask, heads, scope + "/attention", bias=bias)
    out = linear(g, w, p + BERT_NAMES.out, context, scope + "/attention_out", (hidden, hidden))
    h = g.op("Add", [out, x], scope + "/attention_residual")
    h = layer_norm(g, w, p + BERT_NAMES.attention_norm, h, scope + "/attention_norm", hidden, eps)
    h = g.op("Add", [h, x], scope + "/block_residual")
    h = layer_norm(g, w, p + "layer_norm_1", h, scope + "/norm_1", hidden, eps)
    ff = feed_forward(
        g,
        w,
        h,
        scope + "/mlp",
        p + "mlp.up_gated_layer",
        p + "mlp.down_layer",
        hidden,
        inner,
        act,
        None,
        fused_gate=True,
        gate_second=True,
    )
    ff = g.op("Add", [ff, h], scope + "/mlp_residual")
    return layer_norm(g, w, p + "layer_norm_2", ff, scope + "/norm_2", hidden, eps, output=output)


def build(g: GraphBuilder, c: HFConfig, w: Weights) -> Encoded:
    qk_post_norm = QK_POST_NORM in json.dumps(c.raw.get("auto_map") or {}) or w.has(QK_NORM_ANCHOR)
    hidden = c.int("hidden_size")
    layers = c.int("num_hidden_layers")
    num_heads = c.count("num_attention_heads")
    heads = attention_heads(c, hidden, num_heads)
    inner = c.int("intermediate_size")
    eps = c.float("layer_norm_eps", default=1e-12)
    positions = c.choice("position_embedding_type", ("alibi", "absolute"), default="absolute")
    ff_type = c.choice("feed_forward_type", ("original", *GLU), default="original")
    act = GLU.get(ff_type) or check_activation(c.get("hidden_act", default="gelu"), c.path)
    types = c.int("type_vocab_size", default=2)
    if qk_post_norm and ff_type not in GLU:
        raise UnsupportedArchitectureError(
            f"{c.path}: {QK_POST_NORM} with feed_forward_type {ff_type!r} is not supported "
            f"(its remote code has only {', '.join(GLU)})"
        )

    x = tokens(g, w, "embeddings.word_embeddings", "embeddings/word", hidden)
    if types > 0:
        t = token_types(g, w, "embeddings.token_type_embeddings", "embeddings/type", types, hidden)
        x = g.op("Add", [x, t], "embeddings/add_token_type")
    if positions == "absolute":
        max_positions = c.int("max_position_embeddings", default=512)
        p = positions_from_zero(
            g, w, "embeddings.position_embeddings", "embeddings/position", max_positions, hidden
        )
        x = g.op("Add", [x, p], "embeddings/add_position")
    x = layer_norm(g, w, "embeddings.LayerNorm", x, "embeddings/norm", hidden, eps)
    mask = padding_mask(g)
    bias = alibi(g, num_heads) if positions == "alibi" else None
    for n in range(layers):
        p, scope = f"encoder.layer.{n}.", f"layer.{n}"
        output = HIDDEN_STATE if n == layers - 1 else None
        if qk_post_norm:
            x = _qk_post_norm_layer(g, w, x, mask, bias, p, scope, heads, inner, act, eps, output)
            continue
        if ff_type == "original":
            x = post_norm_layer(
                g, w, x, mask, p, BERT_NAMES, heads, hidden, inner, act, eps, scope, bias, output
            )
            continue
        q = linear(g, w, p + BERT_NAMES.query, x, scope + "/query", (hidden, hidden))
        k = linear(g, w, p + BERT_NAMES.key, x, scope + "/key", (hidden, hidden))
        v = linear(g, w, p + BERT_NAMES.value, x, scope + "/value", (hidden, hidden))
        context = attention(g, q, k, v, mask, heads, scope + "/attention", bias=bias)
        out = linear(g, w, p + BERT_NAMES.out, context, scope + "/attention_out", (hidden, hidden))
        x = g.op("Add", [out, x], scope + "/attention_residual")
        x = layer_norm(
            g, w, p + BERT_NAMES.attention_norm, x, scope + "/attention_norm", hidden, eps
        )
        # gated_layers has no bias, wo has one: bias=None takes each as the checkpoint has it.
        ff = feed_forward(
            g,
            w,
            x,
            scope + "/mlp",
            p + "mlp.gated_layers",
            p + "mlp.wo",
            hidden,
            inner,
            act,
            None,
            fused_gate=True,
        )
        x = g.op("Add", [ff, x], scope + "/mlp_residual")
        x = layer_norm(
            g, w, p + "mlp.layernorm", x, scope + "/mlp_norm", hidden, eps, output=output
        )
    if layers == 0:
        x = g.op("Identity", [x], "identity", output=HIDDEN_STATE)
    return Encoded(HIDDEN_STATE, hidden)


FAMILY = Family(
    name="jina_bert",
    model_types=(),
    classes=("JinaBert",),
    anchor="embeddings.word_embeddings.weight",
    build=build,
    claims=claims,
)
