"""Qwen3 and Qwen2 decoders as embedders: causal attention, GQA, RMSNorm, rotary, SwiGLU;
Qwen3 adds per-head q/k RMSNorm, Qwen2 has q/k/v biases instead."""

from __future__ import annotations

from embedserve.models.architectures.base import HIDDEN_STATE, Encoded, Family
from embedserve.models.hf_config import HFConfig
from embedserve.models.layers.attention import Heads, HeadTransform, attention, structured_mask
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.embeddings import tokens
from embedserve.models.layers.linear import check_activation, linear
from embedserve.models.layers.mlp import gated
from embedserve.models.layers.norms import rms_norm
from embedserve.models.layers.rotary import rotary
from embedserve.models.weights import Weights

FULL, SLIDING = "full_attention", "sliding_attention"


def _layer_types(c: HFConfig, layers: int) -> list[str]:
    # 4.x configs without layer_types: sliding from max_window_layers on, if enabled at all.
    if c.get("use_sliding_window", default=False) and c.get("sliding_window") is not None:
        first = c.int("max_window_layers", default=layers)
        default = [SLIDING if i >= first else FULL for i in range(layers)]
    else:
        default = [FULL] * layers
    types = c.layer_types(layers, default)
    if not c.get("use_sliding_window", default=False):
        # transformers ignores sliding entries unless use_sliding_window is set.
        types = [FULL] * layers
    return types


def build(g: GraphBuilder, c: HFConfig, w: Weights) -> Encoded:
    hidden = c.int("hidden_size")
    layers = c.int("num_hidden_layers")
    num_heads = c.int("num_attention_heads")
    kv_heads = c.int("num_key_value_heads", default=num_heads)
    head_dim = c.int("head_dim", default=hidden // num_heads)
    heads = Heads(num_heads, kv_heads, head_dim)
    inner = c.int("intermediate_size")
    eps = c.float("rms_norm_eps", default=1e-6)
    act = check_activation(c.get("hidden_act", default="silu"), c.path)
    max_positions = c.int("max_position_embeddings")
    rope = rotary(g, head_dim, max_positions, c.rope_parameters(), c.path)
    types = _layer_types(c, layers)

    def head_norm(prefix: str) -> HeadTransform | None:
        # Qwen3's q_norm/k_norm: RMSNorm over head_dim of each head; Qwen2 has none.
        if not w.has(prefix + ".weight"):
            return None
        return lambda gb, x, name: rms_norm(gb, w, prefix, x, name, head_dim, eps)

    x = tokens(g, w, "embed_tokens", "embed_tokens", hidden)
    for n, kind in enumerate(types):
        p, scope = f"layers.{n}.", f"layer.{n}"
        window = c.int("sliding_window") if kind == SLIDING else None
        mask = structured_mask(g, causal=True, window=window)
        h = rms_norm(g, w, p + "input_layernorm", x, scope + "/input_norm", hidden, eps)
        # Biases as the checkpoint has them: Qwen2 on q/k/v only, Qwen3 per attention_bias.
        q = linear(g, w, p + "self_attn.q_proj", h, scope + "/q", (heads.width, hidden), None)
        k = linear(g, w, p + "self_attn.k_proj", h, scope + "/k", (heads.kv_width, hidden), None)
        v = linear(g, w, p + "self_attn.v_proj", h, scope + "/v", (heads.kv_width, hidden), None)
        context = attention(
            g,
            q,
            k,
            v,
            mask,
            heads,
            scope + "/attention",
            rotary=rope,
            q_norm=head_norm(p + "self_attn.q_norm"),
            k_norm=head_norm(p + "self_attn.k_norm"),
        )
        out = linear(
            g, w, p + "self_attn.o_proj", context, scope + "/o", (hidden, heads.width), None
        )
        x = g.op("Add", [x, out], scope + "/attention_residual")
        h = rms_norm(g, w, p + "post_attention_layernorm", x, scope + "/mlp_norm", hidden, eps)
        ff = gated(
            g,
            w,
            h,
            scope + "/mlp",
            p + "mlp.gate_proj",
            p + "mlp.up_proj",
            p + "mlp.down_proj",
            hidden,
            inner,
            act,
            None,
        )
        x = g.op("Add", [x, ff], scope + "/mlp_residual")
    x = rms_norm(g, w, "norm", x, "norm", hidden, eps, output=HIDDEN_STATE)
    return Encoded(HIDDEN_STATE, hidden)


FAMILY = Family(
    name="qwen3",
    model_types=("qwen3", "qwen2"),
    classes=("Qwen3", "Qwen2"),
    anchor="embed_tokens.weight",
    build=build,
)
