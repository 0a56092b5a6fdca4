"""Gemma 3 text decoders as embedders (EmbeddingGemma): bidirectional attention when
config.json sets use_bidirectional_attention (causal otherwise), sliding-window layers between
global ones, each kind with its own rotary base, GQA with per-head q/k norms, Gemma's RMSNorm
of (1 + weight) before and after both attention and MLP, embeddings scaled by sqrt(hidden),
scores scaled by query_pre_attn_scalar ** -0.5, GeGLU. attn_logit_softcapping is read by
no Gemma 3 layer in transformers (Gemma 2's was), so it is ignored here too."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from embedserve.models.architectures.base import HIDDEN_STATE, Encoded, Family, attention_heads
from embedserve.models.hf_config import HFConfig
from embedserve.models.layers.attention import structured_mask
from embedserve.models.layers.blocks import DecoderDims, decoder_attention, decoder_mlp
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.embeddings import tokens
from embedserve.models.layers.linear import check_activation
from embedserve.models.layers.norms import rms_norm
from embedserve.models.layers.rotary import rotary
from embedserve.models.weights import Weights

FULL, SLIDING = "full_attention", "sliding_attention"


def _layer_types(c: HFConfig, layers: int) -> list[str]:
    # 4.x configs: every sliding_window_pattern-th layer (from 1) is global, the rest slide.
    pattern = c.int("sliding_window_pattern", default=6)
    default = [FULL if (i + 1) % pattern == 0 else SLIDING for i in range(layers)]
    return c.layer_types(layers, default)


def _rope(c: HFConfig, kind: str) -> dict[str, Any]:
    """5.x keeps rope_parameters per layer kind; 4.x has rope_theta (+ rope_scaling) for the
    global layers and rope_local_base_freq for the sliding ones, with Gemma's defaults."""
    per_kind = c.get("rope_parameters")
    if isinstance(per_kind, dict) and isinstance(per_kind.get(kind), dict):
        return c.rope_parameters(kind)
    if kind == SLIDING:
        theta = c.get("rope_local_base_freq") or 10_000.0
        return {"rope_type": "default", "rope_theta": float(theta)}
    params = c.rope_parameters()
    params.setdefault("rope_theta", 1_000_000.0)
    return params


def build(g: GraphBuilder, c: HFConfig, w: Weights) -> Encoded:
    hidden = c.int("hidden_size")
    layers = c.int("num_hidden_layers")
    num_heads = c.count("num_attention_heads")
    head_dim = c.int("head_dim", default=256)
    kv_heads = c.count("num_key_value_heads", default=num_heads)
    dims = DecoderDims(
        hidden=hidden,
        heads=attention_heads(c, c.count("hidden_size"), num_heads, kv_heads, head_dim),
        inner=c.int("intermediate_size"),
        act=check_activation(
            c.get("hidden_activation", "hidden_act", default="gelu_pytorch_tanh"), c.path
        ),
        eps=c.float("rms_norm_eps", default=1e-6),
    )
    eps = dims.eps
    max_positions = c.int("max_position_embeddings")
    scale = c.float("query_pre_attn_scalar", default=head_dim) ** -0.5
    bidirectional = bool(c.get("use_bidirectional_attention", default=False))
    window = c.int("sliding_window", default=4096)
    masks = {
        FULL: structured_mask(g, causal=not bidirectional),
        # Bidirectional: transformers keeps |q - k| < window // 2 + 1; causal: 0 <= q - k < window.
        SLIDING: structured_mask(
            g, causal=not bidirectional, window=window // 2 if bidirectional else window
        ),
    }
    ropes = {
        kind: rotary(g, head_dim, max_positions, _rope(c, kind), c.path) for kind in (FULL, SLIDING)
    }

    def norm(prefix: str, x: str, name: str, size: int = hidden) -> str:
        return rms_norm(g, w, prefix, x, name, size, eps, offset=1.0)

    x = tokens(g, w, "embed_tokens", "embed_tokens", hidden)
    # transformers multiplies by sqrt(hidden) cast to the weights' dtype (float32 here).
    x = g.op("Mul", [x, g.const(np.float32(math.sqrt(hidden)))], "embed_tokens/scale")
    for n, kind in enumerate(_layer_types(c, layers)):
        p, scope = f"layers.{n}.", f"layer.{n}"
        h = norm(p + "input_layernorm", x, scope + "/input_norm")
        out = decoder_attention(
            g,
            w,
            h,
            masks[kind],
            p,
            scope,
            dims,
            ropes[kind],
            q_norm=lambda gb, t, name, pre=p: norm(pre + "self_attn.q_norm", t, name, head_dim),
            k_norm=lambda gb, t, name, pre=p: norm(pre + "self_attn.k_norm", t, name, head_dim),
            scale=scale,
        )
        out = norm(p + "post_attention_layernorm", out, scope + "/post_attention_norm")
        x = g.op("Add", [x, out], scope + "/attention_residual")
        h = norm(p + "pre_feedforward_layernorm", x, scope + "/pre_mlp_norm")
        ff = decoder_mlp(g, w, h, p, scope, dims)
        ff = norm(p + "post_feedforward_layernorm", ff, scope + "/post_mlp_norm")
        x = g.op("Add", [x, ff], scope + "/mlp_residual")
    rms_norm(g, w, "norm", x, "norm", hidden, eps, output=HIDDEN_STATE, offset=1.0)
    return Encoded(HIDDEN_STATE, hidden)


FAMILY = Family(
    name="gemma3",
    model_types=("gemma3_text",),
    classes=("Gemma3Text",),
    anchor="embed_tokens.weight",
    build=build,
)
