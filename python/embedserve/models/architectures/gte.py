"""Alibaba GTE v1.5 / multilingual ("new", remote code ``Alibaba-NLP/new-impl``): post-LN BERT
with a packed qkv_proj, rotary positions (with GTE's fixed NTK scaling), a GLU feed-forward
whose activation gates the second half of ``up_gate_proj``, and LayerNorm or RMSNorm.

Its unpadded (xformers) attention is an implementation detail: padded attention over the same
mask gives the same states."""

from __future__ import annotations

from embedserve.models.architectures.base import HIDDEN_STATE, Encoded, Family
from embedserve.models.architectures.bert import encoder_dims
from embedserve.models.hf_config import HFConfig, UnsupportedArchitectureError
from embedserve.models.layers.blocks import Norm, PostNormNames, names_mlp, post_norm_encoder
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.embeddings import bert_embeddings, positions_from_zero
from embedserve.models.layers.norms import layer_norm, rms_norm
from embedserve.models.layers.rotary import Rotary, rotary
from embedserve.models.weights import Weights

NORMS: dict[str, Norm] = {"layer_norm": layer_norm, "rms_norm": rms_norm}
# NewLayer's tensors; qkv_proj where pack_qkv (the default) packs q, k and v.
NAMES = PostNormNames(
    query="attention.q_proj",
    key="attention.k_proj",
    value="attention.v_proj",
    qkv="attention.qkv_proj",
    out="attention.o_proj",
    attention_norm="attn_ln",
    up="mlp.up_gate_proj",
    down="mlp.down_proj",
    output_norm="mlp_ln",
)


def build(g: GraphBuilder, c: HFConfig, w: Weights) -> Encoded:
    if c.get("logn_attention_scale", default=False):
        raise UnsupportedArchitectureError(
            f"{c.path}: logn_attention_scale=true is not supported (it scales queries by each "
            "text's length; gte-base-en-v1.5 and gte-multilingual-base leave it off)"
        )
    dims = encoder_dims(c, c.float("layer_norm_eps", default=1e-12))
    hidden = dims.hidden
    norm = NORMS[c.choice("layer_norm_type", tuple(NORMS), default="layer_norm")]
    positions = c.choice("position_embedding_type", ("rope", "absolute"), default="rope")
    max_positions = c.int("max_position_embeddings", default=512)
    rope: Rotary | None = None
    if positions == "rope":
        # Tables for max_position_embeddings rows: the reference's (NTK: times factor) are longer,
        # but the engine never truncates past max_position_embeddings.
        params = {"rope_theta": 10_000.0, **c.rope_parameters()}  # NewConfig's default theta
        rope = rotary(g, dims.heads.head_dim, max_positions, params, c.path)
    x = bert_embeddings(
        g,
        w,
        hidden,
        positions_from_zero if rope is None else None,
        max_positions,
        type_vocab=c.int("type_vocab_size", default=0),
    )
    post_norm_encoder(
        g,
        w,
        x,
        dims,
        layer_prefix="encoder.layer.",
        names=NAMES,
        output=HIDDEN_STATE,
        # NewGatedMLP: [up | gate] = up_gate_proj(x) (no bias); down_proj(up * act(gate)).
        mlp=names_mlp(g, w, NAMES, dims, glu=True, gate_second=True),
        norm=norm,  # the embeddings' norm is a LayerNorm whatever layer_norm_type says
        rotary=rope,
    )
    return Encoded(HIDDEN_STATE, hidden)


FAMILY = Family(
    name="gte",
    model_types=("new",),
    classes=("New",),
    anchor="embeddings.word_embeddings.weight",
    build=build,
)
