"""Alibaba GTE v1.5 / multilingual ("new", remote code ``Alibaba-NLP/new-impl``): post-LN BERT
with a packed qkv_proj, rotary positions (with GTE's fixed NTK scaling), a GLU feed-forward
whose activation gates the second half of ``up_gate_proj``, and LayerNorm or RMSNorm.

Its unpadded (xformers) attention is an implementation detail: padded attention over the same
mask gives the same states."""

from __future__ import annotations

from embedserve.models.architectures.base import HIDDEN_STATE, Encoded, Family, attention_heads
from embedserve.models.hf_config import HFConfig, UnsupportedArchitectureError
from embedserve.models.layers.attention import attention, padding_mask
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.embeddings import positions_from_zero, token_types, tokens
from embedserve.models.layers.linear import check_activation, linear, packed_qkv
from embedserve.models.layers.mlp import feed_forward
from embedserve.models.layers.norms import layer_norm, rms_norm
from embedserve.models.layers.rotary import Rotary, rotary
from embedserve.models.weights import Weights

NORMS = ("layer_norm", "rms_norm")


def build(g: GraphBuilder, c: HFConfig, w: Weights) -> Encoded:
    if c.get("logn_attention_scale", default=False):
        raise UnsupportedArchitectureError(
            f"{c.path}: logn_attention_scale=true is not supported (it scales queries by each "
            "text's length; gte-base-en-v1.5 and gte-multilingual-base leave it off)"
        )
    hidden = c.int("hidden_size")
    layers = c.int("num_hidden_layers")
    num_heads = c.count("num_attention_heads")
    heads = attention_heads(c, hidden, num_heads)
    inner = c.int("intermediate_size")
    eps = c.float("layer_norm_eps", default=1e-12)
    act = check_activation(c.get("hidden_act", default="gelu"), c.path)
    norm_type = c.choice("layer_norm_type", NORMS, default="layer_norm")
    positions = c.choice("position_embedding_type", ("rope", "absolute"), default="rope")
    max_positions = c.int("max_position_embeddings", default=512)
    types = c.int("type_vocab_size", default=0)

    def norm(prefix: str, x: str, name: str, output: str | None = None) -> str:
        if norm_type == "rms_norm":
            return rms_norm(g, w, prefix, x, name, hidden, eps, output=output)
        return layer_norm(g, w, prefix, x, name, hidden, eps, output=output)

    x = tokens(g, w, "embeddings.word_embeddings", "embeddings/word", hidden)
    if types > 0:
        t = token_types(g, w, "embeddings.token_type_embeddings", "embeddings/type", types, hidden)
        x = g.op("Add", [x, t], "embeddings/add_token_type")
    rope: Rotary | None = None
    if positions == "rope":
        # Tables for max_position_embeddings rows: the reference's (NTK: times factor) are longer,
        # but the engine never truncates past max_position_embeddings.
        params = {"rope_theta": 10_000.0, **c.rope_parameters()}  # NewConfig's default theta
        rope = rotary(g, heads.head_dim, max_positions, params, c.path)
    else:
        p = positions_from_zero(
            g, w, "embeddings.position_embeddings", "embeddings/position", max_positions, hidden
        )
        x = g.op("Add", [x, p], "embeddings/add_position")
    # The embeddings' norm is a LayerNorm whatever layer_norm_type says.
    x = layer_norm(g, w, "embeddings.LayerNorm", x, "embeddings/norm", hidden, eps)
    mask = padding_mask(g)
    for n in range(layers):
        p, scope = f"encoder.layer.{n}.", f"layer.{n}"
        if w.has(p + "attention.qkv_proj.weight"):  # pack_qkv, the default
            q, k, v = packed_qkv(g, w, p + "attention.qkv_proj", x, scope, hidden, True)
        else:
            q, k, v = (
                linear(
                    g, w, f"{p}attention.{part}_proj", x, f"{scope}/{part}", (hidden, hidden), True
                )
                for part in "qkv"
            )
        context = attention(g, q, k, v, mask, heads, scope + "/attention", rotary=rope)
        out = linear(
            g, w, p + "attention.o_proj", context, scope + "/attention_out", (hidden, hidden), True
        )
        x = g.op("Add", [x, out], scope + "/attention_residual")
        x = norm(p + "attn_ln", x, scope + "/attention_norm")
        # NewGatedMLP: [up | gate] = up_gate_proj(x) (no bias); down_proj(up * act(gate)).
        ff = feed_forward(
            g,
            w,
            x,
            scope + "/mlp",
            p + "mlp.up_gate_proj",
            p + "mlp.down_proj",
            hidden,
            inner,
            act,
            None,
            fused_gate=True,
            gate_second=True,
        )
        x = g.op("Add", [x, ff], scope + "/mlp_residual")
        x = norm(p + "mlp_ln", x, scope + "/mlp_norm", HIDDEN_STATE if n == layers - 1 else None)
    if layers == 0:
        x = g.op("Identity", [x], "identity", output=HIDDEN_STATE)
    return Encoded(HIDDEN_STATE, hidden)


FAMILY = Family(
    name="gte",
    model_types=("new",),
    classes=("New",),
    anchor="embeddings.word_embeddings.weight",
    build=build,
)
