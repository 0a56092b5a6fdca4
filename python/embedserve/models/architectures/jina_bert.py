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
from dataclasses import replace

from embedserve.models.architectures.base import HIDDEN_STATE, Encoded, Family, attention_heads
from embedserve.models.hf_config import HFConfig, UnsupportedArchitectureError
from embedserve.models.layers.attention import alibi, attention, padding_mask
from embedserve.models.layers.blocks import BERT_NAMES, EncoderDims, names_mlp, post_norm_encoder
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.embeddings import bert_embeddings, positions_from_zero
from embedserve.models.layers.linear import check_activation, linear
from embedserve.models.layers.norms import layer_norm
from embedserve.models.weights import Weights

# feed_forward_type -> the activation JinaBertGLUMLP applies to the first half.
GLU = {"geglu": "gelu", "reglu": "relu"}
# jina-embeddings-v2-base-code's remote code: q/k LayerNorms and other tensor names.
QK_POST_NORM = "jina-bert-v2-qk-post-norm"
QK_NORM_ANCHOR = "encoder.layer.0.attention.self.layer_norm_q.weight"
# JinaBertLayer with a GLU: BERT's attention, then gated_layers / wo / layernorm.
GLU_NAMES = replace(BERT_NAMES, up="mlp.gated_layers", down="mlp.wo", output_norm="mlp.layernorm")
# JinaCodeBertLayer's feed-forward (its norms after it are its own).
CODE_NAMES = replace(GLU_NAMES, up="mlp.up_gated_layer", down="mlp.down_layer")


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
    n: int,
    dims: EncoderDims,
    output: str | None,
) -> str:
    """JinaCodeBertLayer: q = LN(q), k = LN(k); h = LN_out(dense(attn) + x);
    h = LN_1(h + x); out = LN_2(down(a * act(b)) + h) for [a | b] = up_gated_layer(h)."""
    p, scope = f"encoder.layer.{n}.", f"layer.{n}"
    hidden, heads, eps = dims.hidden, dims.heads, dims.eps
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
    ff = names_mlp(g, w, CODE_NAMES, dims, glu=True, gate_second=True)(h, n, p, scope)
    ff = g.op("Add", [ff, h], scope + "/mlp_residual")
    return layer_norm(g, w, p + "layer_norm_2", ff, scope + "/norm_2", hidden, eps, output=output)


def build(g: GraphBuilder, c: HFConfig, w: Weights) -> Encoded:
    qk_post_norm = QK_POST_NORM in json.dumps(c.raw.get("auto_map") or {}) or w.has(QK_NORM_ANCHOR)
    hidden = c.int("hidden_size")
    num_heads = c.count("num_attention_heads")
    positions = c.choice("position_embedding_type", ("alibi", "absolute"), default="absolute")
    ff_type = c.choice("feed_forward_type", ("original", *GLU), default="original")
    dims = EncoderDims(
        hidden=hidden,
        layers=c.int("num_hidden_layers"),
        heads=attention_heads(c, hidden, num_heads),
        inner=c.int("intermediate_size"),
        act=GLU.get(ff_type) or check_activation(c.get("hidden_act", default="gelu"), c.path),
        eps=c.float("layer_norm_eps", default=1e-12),
    )
    if qk_post_norm and ff_type not in GLU:
        raise UnsupportedArchitectureError(
            f"{c.path}: {QK_POST_NORM} with feed_forward_type {ff_type!r} is not supported "
            f"(its remote code has only {', '.join(GLU)})"
        )
    x = bert_embeddings(
        g,
        w,
        hidden,
        positions_from_zero if positions == "absolute" else None,
        c.int("max_position_embeddings", default=512),
        type_vocab=c.int("type_vocab_size", default=2),
    )
    bias = (lambda: alibi(g, num_heads)) if positions == "alibi" else None
    if not qk_post_norm:
        post_norm_encoder(
            g,
            w,
            x,
            dims,
            layer_prefix="encoder.layer.",
            names=BERT_NAMES if ff_type == "original" else GLU_NAMES,
            output=HIDDEN_STATE,
            mlp=names_mlp(g, w, GLU_NAMES, dims, glu=True) if ff_type in GLU else None,
            bias=bias,
        )
        return Encoded(HIDDEN_STATE, hidden)
    x = layer_norm(g, w, "embeddings.LayerNorm", x, "embeddings/norm", hidden, dims.eps)
    mask = padding_mask(g)
    shared_bias = bias() if bias is not None else None
    for n in range(dims.layers):
        output = HIDDEN_STATE if n == dims.layers - 1 else None
        x = _qk_post_norm_layer(g, w, x, mask, shared_bias, n, dims, output)
    if dims.layers == 0:
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
