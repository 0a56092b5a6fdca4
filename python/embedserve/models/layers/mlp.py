"""Feed-forward blocks: up -> activation -> down, and gated (GeGLU, SwiGLU) forms."""

from __future__ import annotations

import numpy as np

from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.linear import activation, linear
from embedserve.models.weights import Weights


def feed_forward(
    g: GraphBuilder,
    w: Weights,
    x: str,
    name: str,
    up: str,
    down: str,
    hidden: int,
    inner: int,
    act: str,
    bias: bool | None = True,
    *,
    fused_gate: bool = False,
    gate_second: bool = False,
) -> str:
    """``down(act(up(x)))`` (BERT's intermediate/output, DistilBERT's lin1/lin2); with
    ``fused_gate``, ``down(act(a) * b)`` where ``up`` projects to [a | b] in one
    [2 * inner, hidden] matrix (ModernBERT's Wi/Wo: GeGLU with act="gelu"), or with
    ``gate_second`` ``down(a * act(b))`` (GTE's up_gate_proj, JinaBERT-code's up_gated_layer)."""
    h = linear(g, w, up, x, name + "/up", ((2 if fused_gate else 1) * inner, hidden), bias)
    if fused_gate:
        h, b = g.ops(
            "Split", [h, g.const([inner, inner], np.int64)], name + "/split", outputs=2, axis=-1
        )
        if gate_second:
            h, b = b, h
    h = activation(g, act, h, name + "/" + act)
    if fused_gate:
        h = g.op("Mul", [h, b], name + "/gate")
    return linear(g, w, down, h, name + "/down", (hidden, inner), bias)


def gated(
    g: GraphBuilder,
    w: Weights,
    x: str,
    name: str,
    gate: str,
    up: str,
    down: str,
    hidden: int,
    inner: int,
    act: str,
    bias: bool | None = False,
) -> str:
    """``down(act(gate(x)) * up(x))`` with separate matrices (Llama / Qwen SwiGLU, act="silu")."""
    gate_out = linear(g, w, gate, x, name + "/gate_proj", (inner, hidden), bias)
    up_out = linear(g, w, up, x, name + "/up_proj", (inner, hidden), bias)
    product = g.op("Mul", [activation(g, act, gate_out, name + "/" + act), up_out], name + "/gate")
    return linear(g, w, down, product, name + "/down", (hidden, inner), bias)
