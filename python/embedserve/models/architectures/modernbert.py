"""ModernBERT: pre-LN, rotary, GeGLU, bias-free by default, and sliding-window (local)
attention in most layers with full (global) attention every few layers."""

from __future__ import annotations

from typing import Any

from embedserve.models.architectures.base import HIDDEN_STATE, Encoded, Family, attention_heads
from embedserve.models.hf_config import HFConfig
from embedserve.models.layers.attention import attention, padding_mask, structured_mask
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.embeddings import tokens
from embedserve.models.layers.linear import check_activation, linear, packed_qkv
from embedserve.models.layers.mlp import feed_forward
from embedserve.models.layers.norms import layer_norm
from embedserve.models.layers.rotary import rotary
from embedserve.models.weights import Weights

FULL, SLIDING = "full_attention", "sliding_attention"
# transformers 4.x names the two rotary bases; 5.x moves them into rope_parameters.
THETA_FIELDS = {FULL: ("global_rope_theta", 160_000.0), SLIDING: ("local_rope_theta", 10_000.0)}


def _layer_types(c: HFConfig, layers: int) -> list[str]:
    every = c.int("global_attn_every_n_layers", default=3)
    default = [SLIDING if i % every else FULL for i in range(layers)]
    return c.layer_types(layers, default)


def _rope(c: HFConfig, layer_type: str) -> dict[str, Any]:
    params = c.rope_parameters(layer_type)
    per_type = c.raw.get("rope_parameters")
    if not (isinstance(per_type, dict) and layer_type in per_type):
        field, default = THETA_FIELDS[layer_type]
        params["rope_theta"] = c.float(field, default=default)
    return params


def build(g: GraphBuilder, c: HFConfig, w: Weights) -> Encoded:
    hidden = c.int("hidden_size")
    layers = c.int("num_hidden_layers")
    num_heads = c.count("num_attention_heads")
    heads = attention_heads(c, hidden, num_heads)
    inner = c.int("intermediate_size")
    eps = c.float("norm_eps", default=1e-5)
    norm_bias = bool(c.get("norm_bias", default=False))
    attn_bias = bool(c.get("attention_bias", default=False))
    mlp_bias = bool(c.get("mlp_bias", default=False))
    act = check_activation(c.get("hidden_activation", "hidden_act", default="gelu"), c.path)
    max_positions = c.int("max_position_embeddings", default=8192)
    # local_attention is the whole window; each token sees half of it on either side.
    half_window = c.int("local_attention", default=128) // 2
    types = _layer_types(c, layers)

    def norm(prefix: str, x: str, name: str, output: str | None = None) -> str:
        return layer_norm(g, w, prefix, x, name, hidden, eps, bias=norm_bias, output=output)

    x = tokens(g, w, "embeddings.tok_embeddings", "embeddings/tokens", hidden)
    x = norm("embeddings.norm", x, "embeddings/norm")
    for n, kind in enumerate(types):
        p, scope = f"layers.{n}.", f"layer.{n}"
        if kind == SLIDING:
            mask = structured_mask(g, causal=False, window=half_window)
        elif kind == FULL:
            mask = padding_mask(g)
        else:
            raise ValueError(
                f"{c.path}: layer_types[{n}] is {kind!r}; expected {FULL} or {SLIDING}"
            )
        rope = rotary(g, heads.head_dim, max_positions, _rope(c, kind), c.path)
        # Layer 0 has no attn_norm (an Identity in transformers): the embeddings' norm serves.
        h = norm(p + "attn_norm", x, scope + "/attn_norm") if n else x
        q, k, v = packed_qkv(g, w, p + "attn.Wqkv", h, scope, hidden, attn_bias)
        context = attention(g, q, k, v, mask, heads, scope + "/attention", rotary=rope)
        out = linear(
            g, w, p + "attn.Wo", context, scope + "/attention_out", (hidden, hidden), attn_bias
        )
        x = g.op("Add", [x, out], scope + "/attention_residual")
        h = norm(p + "mlp_norm", x, scope + "/mlp_norm")
        ff = feed_forward(
            g,
            w,
            h,
            scope + "/mlp",
            p + "mlp.Wi",
            p + "mlp.Wo",
            hidden,
            inner,
            act,
            mlp_bias,
            fused_gate=True,
        )
        x = g.op("Add", [x, ff], scope + "/mlp_residual")
    x = norm("final_norm", x, "final_norm", output=HIDDEN_STATE)
    return Encoded(HIDDEN_STATE, hidden)


FAMILY = Family(
    name="modernbert",
    model_types=("modernbert",),
    classes=("ModernBert",),
    anchor="embeddings.tok_embeddings.weight",
    build=build,
)
