"""DeBERTa-v2 and -v3 (DebertaV2Model and DebertaV2For* checkpoints): post-LN layers whose
attention adds disentangled relative-position terms, content-to-position (c2p) and
position-to-content (p2c), over one table of relative-distance embeddings shared by all layers.

Follows transformers' modeling_deberta_v2 in eval mode: relative distances q - k, log-bucketed
when ``position_buckets`` > 0 (v3), index a [2 * span, hidden] table (LayerNorm'd when
``norm_rel_ebd`` says so) projected by each layer's own key/query projections
(``share_att_key``, v3) or by separate ``pos_key_proj`` / ``pos_query_proj`` (v2); every term
is divided by sqrt(head_dim * (1 + number of terms)).
"""

from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto

from embedserve.models.architectures.base import HIDDEN_STATE, Encoded, Family
from embedserve.models.architectures.bert import encoder_dims
from embedserve.models.hf_config import HFConfig, UnsupportedArchitectureError
from embedserve.models.layers.attention import Heads, attention, padding_mask
from embedserve.models.layers.blocks import EncoderDims
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.embeddings import (
    positions_from_zero,
    query_key_positions,
    token_types,
    tokens,
)
from embedserve.models.layers.linear import linear
from embedserve.models.layers.mlp import feed_forward
from embedserve.models.layers.norms import layer_norm
from embedserve.models.weights import Weights

TERMS = ("c2p", "p2c")


def log_bucket(relative: np.ndarray, bucket_size: int, max_position: int) -> np.ndarray:
    """transformers' make_log_bucket_position, in float32 like torch: exact within
    bucket_size // 2, logarithmic beyond."""
    sign = np.sign(relative)
    mid = bucket_size // 2
    near = (relative < mid) & (relative > -mid)
    abs_pos = np.where(near, mid - 1, np.abs(relative)).astype(np.int64)
    log_pos = (
        np.ceil(
            np.log(abs_pos.astype(np.float32) / np.float32(mid))
            / np.log(np.float32((max_position - 1) / mid))
            * np.float32(mid - 1)
        )
        + mid
    )
    return np.where(abs_pos <= mid, relative, log_pos * sign).astype(np.int64)


def _terms(c: HFConfig) -> tuple[str, ...]:
    raw = c.get("pos_att_type", default=[])
    names = raw.lower().split("|") if isinstance(raw, str) else list(raw)
    names = [n.strip() for n in names if n.strip() and n.strip() != "none"]
    unknown = sorted(set(names) - set(TERMS))
    if unknown:
        raise UnsupportedArchitectureError(
            f"{c.path}: pos_att_type {unknown} is not supported; supported: {', '.join(TERMS)}"
        )
    return tuple(t for t in TERMS if t in names)


class RelativePositions:
    """What every layer's disentangled terms share: the distance table index [seq, seq] and the
    (normalized) relative embeddings."""

    def __init__(self, g: GraphBuilder, c: HFConfig, w: Weights, hidden: int, eps: float) -> None:
        max_positions = c.int("max_position_embeddings", default=512)
        max_relative = c.int("max_relative_positions", default=-1)
        if max_relative < 1:
            max_relative = max_positions
        buckets = c.int("position_buckets", default=-1)
        self.span = buckets if buckets > 0 else max_relative
        table = w.get("encoder.rel_embeddings.weight")
        if table.shape[1] != hidden or table.shape[0] < 2 * self.span:
            raise ValueError(
                f"{w.source}: encoder.rel_embeddings.weight is {table.shape}, wanted at least "
                f"({2 * self.span}, {hidden})"
            )
        self.embeddings = g.weight("encoder.rel_embeddings.weight", table[: 2 * self.span])
        norms = [n.strip() for n in str(c.get("norm_rel_ebd", default="none")).lower().split("|")]
        if "layer_norm" in norms:
            self.embeddings = layer_norm(
                g, w, "encoder.LayerNorm", self.embeddings, "rel_embeddings/norm", hidden, eps
            )
        # Table index of every distance q - k the sequences can hold, offset by max_positions - 1.
        distances = np.arange(-(max_positions - 1), max_positions, dtype=np.int64)
        if buckets > 0:
            distances = log_bucket(distances, buckets, max_relative)
        by_distance = g.weight(
            "rel_embeddings/index_by_distance",
            np.clip(distances + self.span, 0, 2 * self.span - 1),
        )
        rows, cols = query_key_positions(g, "rel_positions")
        distance = g.op("Sub", [rows, cols], "rel_positions/distance")
        offset = g.op("Add", [distance, g.const(max_positions - 1, np.int64)], "rel_positions/at")
        index = g.op("Gather", [by_distance, offset], "rel_positions/index")  # [q, k]
        # GatherElements takes an index of the data's rank: [1, 1, q, k], expanded per row.
        self.index = g.op("Unsqueeze", [index, g.const([0, 1], np.int64)], "rel_positions/c2p")
        # p2c reads row k of K·posQᵀ at index[q, k]: the same index, transposed.
        transposed = g.op("Transpose", [index], "rel_positions/transposed", perm=[1, 0])
        self.index_t = g.op(
            "Unsqueeze", [transposed, g.const([0, 1], np.int64)], "rel_positions/p2c"
        )


def _heads_first(g: GraphBuilder, x: str, heads: Heads, name: str) -> str:
    """[..., sequence, heads * head_dim] -> [..., heads, sequence, head_dim]."""
    shaped = g.op("Reshape", [x, g.const([0, 0, heads.num_heads, heads.head_dim], np.int64)], name)
    return g.op("Transpose", [shaped], name + "_t", perm=[0, 2, 1, 3])


def _gathered(g: GraphBuilder, scores: str, index: str, name: str) -> str:
    """scores [batch, heads, n, 2 * span] read at index [1, 1, n, n] along the last axis."""
    rows = g.op("Shape", [scores], name + "/shape")
    batch_heads = g.op(
        "Slice",
        [rows, g.const([0], np.int64), g.const([2], np.int64), g.const([0], np.int64)],
        name + "/batch_heads",
    )
    shape = g.op("Concat", [batch_heads, g.const([1, 1], np.int64)], name + "/target", axis=0)
    expanded = g.op("Expand", [index, shape], name + "/index")
    return g.op("GatherElements", [scores, expanded], name, axis=3)


def _position_bias(
    g: GraphBuilder,
    w: Weights,
    rel: RelativePositions,
    prefix: str,
    q: str,
    k: str,
    terms: tuple[str, ...],
    share_key: bool,
    heads: Heads,
    hidden: int,
    scale: float,
    name: str,
) -> str:
    """The layer's c2p and/or p2c terms, [batch, heads, seq, seq], already divided by scale."""
    proj = prefix + "attention.self."
    shape = (heads.width, hidden)
    bias = None
    for term in terms:
        # c2p: q · key projection of the table; p2c: k · query projection of the table.
        own = "key_proj" if term == "c2p" else "query_proj"
        table_proj = own if share_key else "pos_" + own
        projected = linear(g, w, proj + table_proj, rel.embeddings, f"{name}/{term}_table", shape)
        projected = g.op("Unsqueeze", [projected, g.const([0], np.int64)], f"{name}/{term}_b")
        table = _heads_first(g, projected, heads, f"{name}/{term}_heads")  # [1, h, 2span, d]
        table = g.op("Transpose", [table], f"{name}/{term}_table_t", perm=[0, 1, 3, 2])
        content = q if term == "c2p" else k
        scores = g.op("MatMul", [content, table], f"{name}/{term}_scores")
        index = rel.index if term == "c2p" else rel.index_t
        score = _gathered(g, scores, index, f"{name}/{term}_gather")
        if term == "p2c":
            score = g.op("Transpose", [score], f"{name}/p2c_t", perm=[0, 1, 3, 2])
        bias = score if bias is None else g.op("Add", [bias, score], f"{name}/c2p_p2c")
    assert bias is not None
    return g.op("Div", [bias, g.const(scale)], f"{name}/position_bias")


def _embeddings(g: GraphBuilder, c: HFConfig, w: Weights, hidden: int, eps: float) -> str:
    """Word (+ absolute position when position_biased_input) (+ token type), projected when
    embedding_size differs from hidden_size, LayerNorm, padded rows zeroed."""
    width = c.int("embedding_size", default=hidden)
    x = tokens(g, w, "embeddings.word_embeddings", "embeddings/word", width)
    if c.get("position_biased_input", default=True):
        pos = positions_from_zero(
            g,
            w,
            "embeddings.position_embeddings",
            "embeddings/position",
            c.int("max_position_embeddings", default=512),
            width,
        )
        x = g.op("Add", [x, pos], "embeddings/add_position")
    types = c.int("type_vocab_size", default=0)
    if types > 0:
        typed = token_types(
            g, w, "embeddings.token_type_embeddings", "embeddings/token_type", types, width
        )
        x = g.op("Add", [x, typed], "embeddings/add_token_type")
    if width != hidden:
        x = linear(g, w, "embeddings.embed_proj", x, "embeddings/proj", (hidden, width), False)
    x = layer_norm(g, w, "embeddings.LayerNorm", x, "embeddings/layer_norm", hidden, eps)
    mask = g.op("Cast", [g.input("attention_mask")], "embeddings/mask", to=TensorProto.FLOAT)
    mask = g.op("Unsqueeze", [mask, g.const([-1], np.int64)], "embeddings/mask_3d")
    return g.op("Mul", [x, mask], "embeddings/masked")


def build(g: GraphBuilder, c: HFConfig, w: Weights) -> Encoded:
    if c.int("conv_kernel_size", default=0) > 0:
        raise UnsupportedArchitectureError(
            f"{c.path}: DeBERTa-v2's convolution layer (conv_kernel_size) is not supported"
        )
    eps = c.float("layer_norm_eps", default=1e-7)
    dims = encoder_dims(c, eps)
    head_dim = c.int("attention_head_size", default=dims.heads.head_dim)
    heads = Heads(dims.heads.num_heads, dims.heads.num_heads, head_dim)
    dims = EncoderDims(dims.hidden, dims.layers, heads, dims.inner, dims.act, eps)
    terms = _terms(c)
    relative = bool(c.get("relative_attention", default=False))
    share_key = bool(c.get("share_att_key", default=False))
    # transformers scales by the terms pos_att_type names, relative attention or not.
    scale = math.sqrt(head_dim * (1 + len(terms)))
    x = _embeddings(g, c, w, dims.hidden, eps)
    mask = padding_mask(g)
    rel = RelativePositions(g, c, w, dims.hidden, eps) if relative and terms else None
    for n in range(dims.layers):
        x = _layer(g, w, x, mask, rel, n, dims, terms, share_key, scale, n == dims.layers - 1)
    return Encoded(HIDDEN_STATE, dims.hidden)


def _layer(
    g: GraphBuilder,
    w: Weights,
    x: str,
    mask: str,
    rel: RelativePositions | None,
    n: int,
    dims: EncoderDims,
    terms: tuple[str, ...],
    share_key: bool,
    scale: float,
    last: bool,
) -> str:
    p, name = f"encoder.layer.{n}.", f"layer.{n}"
    hidden, heads = dims.hidden, dims.heads
    shape = (heads.width, hidden)
    q = linear(g, w, p + "attention.self.query_proj", x, name + "/query", shape)
    k = linear(g, w, p + "attention.self.key_proj", x, name + "/key", shape)
    v = linear(g, w, p + "attention.self.value_proj", x, name + "/value", shape)
    bias = None
    if rel is not None:
        q_heads = _heads_first(g, q, heads, name + "/query_heads")
        k_heads = _heads_first(g, k, heads, name + "/key_heads")
        bias = _position_bias(
            g, w, rel, p, q_heads, k_heads, terms, share_key, heads, hidden, scale, name
        )
    # The bias is [batch, heads, seq, seq]: attention() broadcasts it like MPNet's [1, ...].
    context = attention(g, q, k, v, mask, heads, name + "/attention", bias=bias, scale=1.0 / scale)
    out = linear(
        g, w, p + "attention.output.dense", context, name + "/attention_out", (hidden, heads.width)
    )
    residual = g.op("Add", [out, x], name + "/attention_residual")
    x = layer_norm(
        g, w, p + "attention.output.LayerNorm", residual, name + "/attention_norm", hidden, dims.eps
    )
    ff = feed_forward(
        g,
        w,
        x,
        name + "/mlp",
        p + "intermediate.dense",
        p + "output.dense",
        hidden,
        dims.inner,
        dims.act,
    )
    residual = g.op("Add", [ff, x], name + "/output_residual")
    return layer_norm(
        g,
        w,
        p + "output.LayerNorm",
        residual,
        name + "/output_norm",
        hidden,
        dims.eps,
        output=HIDDEN_STATE if last else None,
    )


FAMILY = Family(
    name="deberta-v2",
    model_types=("deberta-v2",),
    classes=("DebertaV2",),
    anchor="embeddings.word_embeddings.weight",
    build=build,
)
