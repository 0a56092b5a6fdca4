"""Attention masks and scaled dot-product attention: bidirectional or causal, full or sliding
window, multi-head or grouped-query, with optional q/k norms, rotary and an additive bias."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto

from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.embeddings import query_key_positions
from embedserve.models.layers.rotary import Rotary

# transformers masks with torch.finfo(dtype).min, not -10000; same value, same numerics.
MASK_VALUE = float(np.finfo(np.float32).min)

# Per-head transform of q or k laid out [batch, sequence, heads, head_dim] (Qwen3's q/k norm).
HeadTransform = Callable[[GraphBuilder, str, str], str]


@dataclass(frozen=True)
class Heads:
    num_heads: int
    num_kv_heads: int
    head_dim: int

    @property
    def width(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.num_kv_heads * self.head_dim


def padding_mask(g: GraphBuilder) -> str:
    """(1 - attention_mask) * finfo.min as [batch, 1, 1, sequence]; built once, added in every
    layer. The Unsqueeze/Cast/Sub/Mul chain is what ONNX Runtime's Attention fusion expects."""
    if "mask/padding" in g.shared:
        return g.shared["mask/padding"]
    mask = g.input("attention_mask")
    unsqueezed = g.op("Unsqueeze", [mask, g.const([1], np.int64)], "mask/unsqueeze_heads")
    unsqueezed = g.op("Unsqueeze", [unsqueezed, g.const([2], np.int64)], "mask/unsqueeze_queries")
    as_float = g.op("Cast", [unsqueezed], "mask/cast", to=TensorProto.FLOAT)
    inverted = g.op("Sub", [g.const(1.0), as_float], "mask/invert")
    g.shared["mask/padding"] = g.op("Mul", [inverted, g.const(MASK_VALUE)], "mask/scale")
    return g.shared["mask/padding"]


def structured_mask(g: GraphBuilder, causal: bool, window: int | None = None) -> str:
    """Additive [batch, 1, sequence, sequence] mask: padding, and causal and/or a window.

    Bidirectional windows keep ``|q - k| <= window`` (ModernBERT's local attention, with
    window = local_attention // 2); causal windows keep ``0 <= q - k < window`` (transformers'
    sliding_window). Allowed positions are combined as booleans and turned into one additive
    mask, so a query that sees nothing gets finfo.min everywhere (uniform, finite) rather than
    -inf from adding two masks.
    """
    key = f"mask/{'causal' if causal else 'bidirectional'}/{window}"
    if key in g.shared:
        return g.shared[key]
    scope = key.replace("/None", "")
    rows, cols = query_key_positions(g, scope)
    distance = g.op("Sub", [rows, cols], scope + "/distance")  # q - k, [sequence, sequence]
    allowed: str | None = None
    if causal:
        allowed = g.op("GreaterOrEqual", [distance, g.const(0, np.int64)], scope + "/causal")
        if window is not None:
            inside = g.op("Less", [distance, g.const(window, np.int64)], scope + "/window")
            allowed = g.op("And", [allowed, inside], scope + "/causal_window")
    elif window is not None:
        absolute = g.op("Abs", [distance], scope + "/abs")
        allowed = g.op("LessOrEqual", [absolute, g.const(window, np.int64)], scope + "/window")
    keys = g.op("Cast", [g.input("attention_mask")], scope + "/keys_bool", to=TensorProto.BOOL)
    keys = g.op("Unsqueeze", [keys, g.const([1, 2], np.int64)], scope + "/keys_b11s")
    if allowed is not None:
        keys = g.op("And", [keys, allowed], scope + "/allowed")
    g.shared[key] = g.op("Where", [keys, g.const(0.0), g.const(MASK_VALUE)], scope + "/additive")
    return g.shared[key]


def attention(
    g: GraphBuilder,
    q: str,
    k: str,
    v: str,
    mask: str,
    heads: Heads,
    name: str,
    *,
    rotary: Rotary | None = None,
    q_norm: HeadTransform | None = None,
    k_norm: HeadTransform | None = None,
    bias: str | None = None,
    scale: float | None = None,
) -> str:
    """softmax(q·kᵀ / sqrt(head_dim) + bias + mask)·v, heads merged back: [batch, seq, width].

    ``q``/``k``/``v`` are projections [batch, sequence, heads * head_dim] (k and v with
    ``num_kv_heads``). ``bias`` is an additive [1, heads, sequence, sequence] term (MPNet).
    ``scale`` replaces 1 / sqrt(head_dim) (Gemma's query_pre_attn_scalar ** -0.5).
    """
    per_head = [0, 0, heads.num_heads, heads.head_dim]
    per_kv_head = [0, 0, heads.num_kv_heads, heads.head_dim]
    q = g.op("Reshape", [q, g.const(per_head, np.int64)], name + "/query_heads")
    k = g.op("Reshape", [k, g.const(per_kv_head, np.int64)], name + "/key_heads")
    v = g.op("Reshape", [v, g.const(per_kv_head, np.int64)], name + "/value_heads")
    if q_norm is not None:
        q = q_norm(g, q, name + "/query_norm")
    if k_norm is not None:
        k = k_norm(g, k, name + "/key_norm")
    if heads.num_kv_heads != heads.num_heads:
        k = _repeat_kv(g, k, heads, name + "/key_repeat")
        v = _repeat_kv(g, v, heads, name + "/value_repeat")
    q = g.op("Transpose", [q], name + "/query_t", perm=[0, 2, 1, 3])
    v = g.op("Transpose", [v], name + "/value_t", perm=[0, 2, 1, 3])
    if rotary is None:
        # Straight to kᵀ: the layout ONNX Runtime's BERT Attention fusion recognises.
        k = g.op("Transpose", [k], name + "/key_t", perm=[0, 2, 3, 1])
    else:
        q = rotary.apply(g, q, name + "/query_rotary")
        k = g.op("Transpose", [k], name + "/key_bhsd", perm=[0, 2, 1, 3])
        k = rotary.apply(g, k, name + "/key_rotary")
        k = g.op("Transpose", [k], name + "/key_t", perm=[0, 1, 3, 2])

    scores = g.op("MatMul", [q, k], name + "/scores")
    if scale is None:
        scores = g.op("Div", [scores, g.const(math.sqrt(heads.head_dim))], name + "/scaled_scores")
    else:
        scores = g.op("Mul", [scores, g.const(scale)], name + "/scaled_scores")
    if bias is not None:
        scores = g.op("Add", [scores, bias], name + "/biased_scores")
    scores = g.op("Add", [scores, mask], name + "/masked_scores")
    probs = g.op("Softmax", [scores], name + "/probs", axis=-1)
    context = g.op("MatMul", [probs, v], name + "/context")
    context = g.op("Transpose", [context], name + "/context_t", perm=[0, 2, 1, 3])
    return g.op(
        "Reshape", [context, g.const([0, 0, heads.width], np.int64)], name + "/context_merged"
    )


def _repeat_kv(g: GraphBuilder, x: str, heads: Heads, name: str) -> str:
    """[batch, sequence, kv_heads, head_dim] -> [batch, sequence, heads, head_dim], each kv head
    serving a group of consecutive query heads (transformers' repeat_kv)."""
    group = heads.num_heads // heads.num_kv_heads
    x = g.op("Unsqueeze", [x, g.const([3], np.int64)], name + "/unsqueeze")
    x = g.op("Expand", [x, g.const([1, 1, 1, group, 1], np.int64)], name + "/expand")
    shape = g.const([0, 0, heads.num_heads, heads.head_dim], np.int64)
    return g.op("Reshape", [x, shape], name)


def alibi_slopes(num_heads: int) -> list[float]:
    """ALiBi's per-head slopes (Press et al.): a geometric series for 2^a heads, else those of
    the nearest lower power of two plus every other slope of the next one."""

    def power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(num_heads).is_integer():
        return power_of_2(num_heads)
    closest = 2 ** math.floor(math.log2(num_heads))
    return power_of_2(closest) + alibi_slopes(2 * closest)[0::2][: num_heads - closest]


def alibi(g: GraphBuilder, num_heads: int) -> str:
    """Symmetric ALiBi bias -slope_h * |q - k| as [1, heads, sequence, sequence] (JinaBERT);
    built once, added to every layer's scores beside the padding mask."""
    key = f"alibi/{num_heads}"
    if key in g.shared:
        return g.shared[key]
    rows, cols = query_key_positions(g, "alibi")
    distance = g.op("Abs", [g.op("Sub", [cols, rows], "alibi/offset")], "alibi/distance")
    distance = g.op("Cast", [distance], "alibi/distance_float", to=TensorProto.FLOAT)
    slopes = -np.asarray(alibi_slopes(num_heads), dtype=np.float32).reshape(1, num_heads, 1, 1)
    g.shared[key] = g.op("Mul", [g.const(slopes), distance], "alibi/bias")
    return g.shared[key]
