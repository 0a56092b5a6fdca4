"""Fold the elementwise work between an encoder's matrix products into embedserve's one-pass
kernels (csrc/epilogues.cpp, run by ONNX Runtime through runtime/custom_ops.py):

- `ai.embedserve.BiasGelu`: a projection's bias Add and the exact GELU after it, in the node
  order `layers/linear.activation` writes (x/√2, Erf, +1, ·x, ·0.5);
- `ai.embedserve.BiasResidualLayerNorm`: a projection's bias Add, the residual Add and the
  LayerNormalization after them (a post-norm encoder's block ends, `layers/blocks`).

ONNX Runtime's own fusions of the same nodes (BiasGelu, SkipLayerNormalization) are slower
here, or slower than the unfused ops (bench/NOTES.md "Kernels of our own"). Only that exact
form is folded; pre-norm blocks, other activations and graphs exported elsewhere keep their
standard ops.

Numerics: the same sums in the same order; erf by Abramowitz & Stegun 7.1.26 (|error| ≤
1.5e-7, csrc/epilogues.cpp) where torch's is exact; LayerNorm's mean and variance accumulate
in float32.
tests/models/test_families.py holds the fused graph's hidden states to the standard graph's.
"""

from __future__ import annotations

import math

import onnx
from onnx import helper

from embedserve.models.onnx_index import GraphIndex, replace_nodes

DOMAIN = "ai.embedserve"


def _gelu(g: GraphIndex, add: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    """The exact GELU nodes reading `add`'s output, ending in the last Mul, if it has that form."""
    x = add.output[0]
    readers = g.consumers[x]
    if x in g.outputs or len(readers) != 2:
        return None
    div = next((n for n in readers if n.op_type == "Div"), None)
    mul = next((n for n in readers if n.op_type == "Mul"), None)
    if div is None or mul is None or div.input[0] != x:
        return None
    root2 = g.scalar(div.input[1])
    if root2 is None or not math.isclose(root2, math.sqrt(2.0), rel_tol=1e-6):
        return None
    erf = g.consumers[div.output[0]]
    if len(erf) != 1 or erf[0].op_type != "Erf" or not g.only_use(div):
        return None
    shifted = g.consumers[erf[0].output[0]]
    if len(shifted) != 1 or shifted[0].op_type != "Add" or not g.only_use(erf[0]):
        return None
    if g.scalar(shifted[0].input[1]) != 1.0 or shifted[0].input[0] != erf[0].output[0]:
        return None
    if set(mul.input) != {x, shifted[0].output[0]} or not g.only_use(shifted[0]):
        return None
    half = g.consumers[mul.output[0]]
    if len(half) != 1 or half[0].op_type != "Mul" or not g.only_use(mul):
        return None
    if g.scalar(half[0].input[1]) != 0.5 or half[0].input[0] != mul.output[0]:
        return None
    return [div, erf[0], shifted[0], mul, half[0]]


def _bias_gelus(g: GraphIndex) -> list[tuple[list[onnx.NodeProto], onnx.NodeProto]]:
    folded = []
    for node in g.graph.node:
        if node.op_type != "Add" or not (found := g.projection_bias(node.output[0])):
            continue
        add, x, _ = found
        bias = add.input[1]
        gelu = _gelu(g, add)
        if gelu is None:
            continue
        out = gelu[-1].output[0]
        fused = helper.make_node(
            "BiasGelu", [x, bias], [out], name=f"{out}/bias_gelu", domain=DOMAIN
        )
        folded.append(([add, *gelu], fused))
    return folded


def _norms(g: GraphIndex) -> list[tuple[list[onnx.NodeProto], onnx.NodeProto]]:
    folded = []
    for norm in g.graph.node:
        if norm.op_type != "LayerNormalization" or len(norm.output) != 1:
            continue
        axis = next((a.i for a in norm.attribute if a.name == "axis"), -1)
        if axis != -1:
            continue
        residual = g.op(norm.input[0], "Add")
        if residual is None or not g.only_use(residual):
            continue
        # Either side of the residual Add may be the projection's biased output. (An embedding
        # sum's Add of a constant row is not one: its other side may broadcast, which the kernel
        # does not.)
        for side in (0, 1):
            found = g.projection_bias(residual.input[side])
            if found and g.only_use(found[0]):
                break
        else:
            continue
        add, x, _ = found
        bias = add.input[1]
        epsilon = next((a.f for a in norm.attribute if a.name == "epsilon"), 1e-5)
        inputs = [x, bias, residual.input[1 - side], *norm.input[1:3]]
        fused = helper.make_node(
            "BiasResidualLayerNorm",
            inputs,
            [norm.output[0]],
            name=f"{norm.output[0]}/bias_residual_norm",
            domain=DOMAIN,
            epsilon=epsilon,
        )
        folded.append(([add, residual, norm], fused))
    return folded


def fuse_epilogues(model: onnx.ModelProto) -> bool:
    """Fold every matching bias + GELU and bias + residual + LayerNorm in `model` (in place);
    whether anything was folded."""
    g = GraphIndex(model)
    folded = _bias_gelus(g) + _norms(g)
    if not folded:
        return False
    replace_nodes(model, g, folded)
    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return True
