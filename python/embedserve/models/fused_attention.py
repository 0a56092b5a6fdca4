"""Fold each layer's attention core into one fused op: embedserve's `ai.embedserve.PaddedAttention`
(csrc/attention.cpp, loaded into ONNX Runtime by runtime/custom_ops.py) or ONNX Runtime's own
`com.microsoft.MultiHeadAttention` where that library is not built. Both take the same inputs.

The compiler writes attention in standard ops (`layers/attention.py`): split heads (Reshape,
Transpose), q·kᵀ, scale, add the padding mask (and a position bias), Softmax, ·v, merge heads.
On the CPU those ops spend about a fifth of an encoder's time outside its projections — the
transposes and the [batch, heads, seq, seq] score tensors go through memory four times — where
the fused kernel runs each (sequence, head) through q·kᵀ, softmax and ·v while it is in cache and
writes the merged heads directly. The q, k and v projections' biases move into the fused op's
`bias` input, which drops three Adds a layer (bench/NOTES.md "The last 10 % of the CPU").

Only ONNX Runtime runs either op, so the pass makes a separate cached copy for its sessions; the
compiled graph stays standard ONNX for OpenVINO and the GPU passes. Only the exact shape the
layer library writes is folded (constant [0, 0, heads, head_dim] head splits, kᵀ by one
Transpose, a constant scale, the padding mask from `attention_mask`); anything else — rotary,
q/k norms, grouped-query heads, causal or windowed masks, graphs exported elsewhere — is left
as it is.

Numerics: the same float32 products and softmax; the scale multiplies inside the q·kᵀ product
instead of dividing after it, and a masked key gets ONNX Runtime's mask_filter_value (-10000)
rather than float32's minimum, both of which leave the probabilities of real keys unchanged
(exp underflows to 0 either way). tests/models/test_fused_attention.py holds the two graphs'
hidden states together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from embedserve.models.onnx_index import GraphIndex, replace_nodes

FUSION_VERSION = 3  # part of the cached copy's name: bump when a pass's output changes
MS_DOMAIN = "com.microsoft"
FUSED_MASK = "attention_mask/key_padding_int32"


@dataclass(frozen=True)
class AttentionOp:
    """A fused attention op the pass can write: its domain, name, and a tag for the cached copy."""

    domain: str
    name: str
    tag: str


MULTI_HEAD = AttentionOp(MS_DOMAIN, "MultiHeadAttention", "mha")
# Skips the keys past each sequence's end instead of masking them (a padded batch costs what
# its tokens cost) and runs q·kᵀ, softmax and ·v per (sequence, head) in registers:
# bench/NOTES.md "An attention kernel of our own".
PADDED = AttentionOp("ai.embedserve", "PaddedAttention", "padded")


@dataclass
class _Core:
    """One layer's matched attention core: its 3-D q, k, v, heads, scale, position bias and the
    nodes it replaces."""

    q: str
    k: str
    v: str
    heads: int
    head_dim: int
    scale: float | None  # None: 1/sqrt(head_dim), the fused op's default
    position_bias: str | None
    output: str
    nodes: list[onnx.NodeProto]


def runs_in_float32(model: onnx.ModelProto) -> bool:
    """Whether the graph computes in float32: no float16 or bfloat16 weights (the fp16 and bf16
    precisions store them so)."""
    low = {TensorProto.FLOAT16, TensorProto.BFLOAT16}
    return not any(i.data_type in low for i in model.graph.initializer)


def _perm(node: onnx.NodeProto) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), [])


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), -1)


def _heads_split(g: GraphIndex, name: str) -> tuple[str, int, int] | None:
    """(3-D input, heads, head_dim) of a Reshape to constant [0, 0, heads, head_dim]."""
    node = g.op(name, "Reshape")
    if node is None or not g.only_use(node):
        return None
    shape = g.constant(node.input[1])
    if shape is None or shape.shape != (4,) or shape[0] != 0 or shape[1] != 0:
        return None
    return node.input[0], int(shape[2]), int(shape[3])


def _is_padding_mask(g: GraphIndex, name: str) -> bool:
    """The layer library's padding mask: (1 - float(attention_mask[:, None, None, :])) * min."""
    scale = g.op(name, "Mul")
    invert = scale and g.op(scale.input[0], "Sub")
    cast = invert and g.op(invert.input[1], "Cast")
    queries = cast and g.op(cast.input[0], "Unsqueeze")
    heads = queries and g.op(queries.input[0], "Unsqueeze")
    if not (scale and invert and cast and queries and heads):
        return False
    one, big = g.scalar(invert.input[0]), g.scalar(scale.input[1])
    return (
        heads.input[0] == "attention_mask"
        and one == 1.0
        and big is not None
        and big <= -1e4
        and _ints(g.constant(heads.input[1])) == [1]
        and _ints(g.constant(queries.input[1])) == [2]
    )


def _ints(value: np.ndarray | None) -> list[int] | None:
    return None if value is None else [int(v) for v in value.reshape(-1)]


def _match(g: GraphIndex, softmax: onnx.NodeProto) -> _Core | None:
    """The attention core around one Softmax, if it has exactly the layer library's form."""
    if _axis(softmax) not in (-1, 3) or not g.only_use(softmax):
        return None
    masked = g.op(softmax.input[0], "Add")
    if masked is None or not g.only_use(masked) or not _is_padding_mask(g, masked.input[1]):
        return None
    nodes = [masked, softmax]
    scores = masked.input[0]
    position_bias = None
    biased = g.op(scores, "Add")
    if biased is not None:
        if not g.only_use(biased):
            return None
        nodes.append(biased)
        scores, position_bias = biased.input
    scaled = g.op(scores, "Div") or g.op(scores, "Mul")
    if scaled is None or not g.only_use(scaled):
        return None
    factor = g.scalar(scaled.input[1])
    if factor is None:
        return None
    nodes.append(scaled)
    product = g.op(scaled.input[0], "MatMul")
    if product is None or not g.only_use(product):
        return None
    nodes.append(product)
    q_t, k_t = g.op(product.input[0], "Transpose"), g.op(product.input[1], "Transpose")
    if not (q_t and k_t and g.only_use(q_t) and g.only_use(k_t)):
        return None
    if _perm(q_t) != [0, 2, 1, 3] or _perm(k_t) != [0, 2, 3, 1]:
        return None
    q_split, k_split = _heads_split(g, q_t.input[0]), _heads_split(g, k_t.input[0])
    # The ·v side: softmax → MatMul(probs, Transpose(Reshape(v))) → Transpose → Reshape.
    context = g.consumers[softmax.output[0]][0]
    if context.op_type != "MatMul" or context.input[0] != softmax.output[0]:
        return None
    v_t = g.op(context.input[1], "Transpose")
    v_split = v_t and _heads_split(g, v_t.input[0])
    merged_t = g.consumers[context.output[0]]
    if not (q_split and k_split and v_t and v_split and g.only_use(v_t) and g.only_use(context)):
        return None
    if _perm(v_t) != [0, 2, 1, 3] or len(merged_t) != 1 or merged_t[0].op_type != "Transpose":
        return None
    merged_t = merged_t[0]
    merged = g.consumers[merged_t.output[0]]
    if _perm(merged_t) != [0, 2, 1, 3] or len(merged) != 1 or merged[0].op_type != "Reshape":
        return None
    merged = merged[0]
    heads, head_dim = q_split[1], q_split[2]
    if (k_split[1], k_split[2]) != (heads, head_dim) or (v_split[1], v_split[2]) != (
        heads,
        head_dim,
    ):
        return None  # grouped-query heads are left to the standard ops
    width = g.constant(merged.input[1])
    if width is None or list(width) != [0, 0, heads * head_dim]:
        return None
    scale = 1.0 / factor if scaled.op_type == "Div" else factor
    if math.isclose(scale, 1.0 / math.sqrt(head_dim), rel_tol=1e-7):
        scale = None
    splits = [g.producer[t.input[0]] for t in (q_t, k_t, v_t)]
    return _Core(
        q=q_split[0],
        k=k_split[0],
        v=v_split[0],
        heads=heads,
        head_dim=head_dim,
        scale=scale,
        position_bias=position_bias,
        output=merged.output[0],
        nodes=[*nodes, q_t, k_t, v_t, context, merged_t, merged, *splits],
    )


def _projection_bias(g: GraphIndex, name: str, width: int) -> tuple[str, np.ndarray] | None:
    """(the product before it, the bias) when `name` is a [width] projection bias read only by
    the attention core."""
    found = g.projection_bias(name)
    if found is None or not g.only_use(found[0]) or found[2].shape != (width,):
        return None
    return found[1], found[2]


def fuse_attention(model: onnx.ModelProto, op: AttentionOp = MULTI_HEAD) -> onnx.ModelProto | None:
    """The same model (changed in place) with every matching attention core as one `op`; None
    when it has no core to fold."""
    g = GraphIndex(model)
    cores = [c for s in g.graph.node if s.op_type == "Softmax" and (c := _match(g, s))]
    if not cores:
        return None
    folded: list[tuple[list[onnx.NodeProto], onnx.NodeProto]] = []
    for index, core in enumerate(cores):
        inputs = [core.q, core.k, core.v]
        width = core.heads * core.head_dim
        biases = [_projection_bias(g, name, width) for name in inputs]
        bias_name = ""
        if all(biases):
            for slot, (product, _) in enumerate(biases):
                core.nodes.append(g.producer[inputs[slot]])
                inputs[slot] = product
            bias = np.concatenate([b for _, b in biases]).astype(np.float32)
            bias_name = f"{core.output}/qkv_bias"
            g.graph.initializer.append(numpy_helper.from_array(bias, bias_name))
        attributes = {"num_heads": core.heads}
        if core.scale is not None:
            attributes["scale"] = core.scale
        node = helper.make_node(
            op.name,
            [*inputs, bias_name, FUSED_MASK, core.position_bias or ""],
            [core.output],
            name=f"{core.output}/fused_attention_{index}",
            domain=op.domain,
            **attributes,
        )
        folded.append((core.nodes, node))
    cast = helper.make_node(
        "Cast", ["attention_mask"], [FUSED_MASK], name=FUSED_MASK, to=TensorProto.INT32
    )
    replace_nodes(model, g, folded, first=[cast])
    if not any(o.domain == op.domain for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(op.domain, 1))
    return model
