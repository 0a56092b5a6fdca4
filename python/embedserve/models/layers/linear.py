"""Dense projections and elementwise activations."""

from __future__ import annotations

import math

import numpy as np

from embedserve.models.hf_config import UnsupportedArchitectureError
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.weights import Weights

# transformers' ACT2FN names, grouped by the function they compute.
GELU_ERF = ("gelu", "gelu_python")
GELU_TANH = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
ACTIVATIONS = (*GELU_ERF, *GELU_TANH, "quick_gelu", "relu", "silu", "swish", "sigmoid")


def linear(
    g: GraphBuilder,
    w: Weights,
    prefix: str,
    x: str,
    name: str,
    shape: tuple[int, int],
    bias: bool | None = True,
) -> str:
    """``x @ W.T + b`` for a torch Linear stored as ``prefix.weight`` [out, in] (+ ``.bias``).

    ``bias=None`` uses the bias when the checkpoint has one, for families whose config flag
    is unreliable across releases.
    """
    # torch stores [out, in]; transposing once here makes each projection a plain MatMul.
    weight = g.weight(prefix + ".weight_t", w.get(prefix + ".weight", shape).T)
    out = g.op("MatMul", [x, weight], name + "/matmul")
    if bias is None:
        bias = w.has(prefix + ".bias")
    if bias:
        b = g.weight(prefix + ".bias", w.get(prefix + ".bias", (shape[0],)))
        out = g.op("Add", [out, b], name + "/bias")
    return out


def packed_qkv(
    g: GraphBuilder, w: Weights, prefix: str, x: str, name: str, hidden: int, bias: bool | None
) -> tuple[str, str, str]:
    """q, k and v from one projection stored packed as ``prefix.weight`` [3·hidden, hidden]
    (GTE's qkv_proj, NomicBERT's and ModernBERT's Wqkv): one MatMul, then a Split."""
    qkv = linear(g, w, prefix, x, name + "/qkv", (3 * hidden, hidden), bias)
    q, k, v = g.ops(
        "Split", [qkv, g.const([hidden] * 3, np.int64)], name + "/qkv_split", 3, axis=-1
    )
    return q, k, v


def check_activation(kind: str, source: object) -> str:
    if kind not in ACTIVATIONS:
        raise UnsupportedArchitectureError(
            f"{source}: activation {kind!r} is not supported; supported: {', '.join(ACTIVATIONS)}"
        )
    return kind


def activation(g: GraphBuilder, kind: str, x: str, name: str) -> str:
    """transformers' ACT2FN[kind] in standard ops."""
    if kind == "relu":
        return g.op("Relu", [x], name)
    if kind == "sigmoid":
        return g.op("Sigmoid", [x], name)
    if kind in ("silu", "swish"):
        return g.op("Mul", [x, g.op("Sigmoid", [x], name + "/sigmoid")], name)
    if kind == "quick_gelu":
        scaled = g.op("Mul", [x, g.const(1.702)], name + "/scale")
        return g.op("Mul", [x, g.op("Sigmoid", [scaled], name + "/sigmoid")], name)
    if kind in GELU_ERF:
        # Exact GELU 0.5 * x * (1 + erf(x / sqrt(2))), in the node order torch exports, which
        # ONNX Runtime fuses into one Gelu kernel.
        scaled = g.op("Div", [x, g.const(math.sqrt(2.0))], name + "/div")
        erf = g.op("Erf", [scaled], name + "/erf")
        shifted = g.op("Add", [erf, g.const(1.0)], name + "/add")
        product = g.op("Mul", [x, shifted], name + "/mul")
        return g.op("Mul", [product, g.const(0.5)], name)
    if kind in GELU_TANH:
        # 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))), transformers' NewGELU.
        cubed = g.op("Pow", [x, g.const(3.0)], name + "/pow")
        cubed = g.op("Mul", [cubed, g.const(0.044715)], name + "/cubic_coeff")
        inner = g.op("Add", [x, cubed], name + "/inner")
        inner = g.op("Mul", [inner, g.const(math.sqrt(2.0 / math.pi))], name + "/inner_scale")
        tanh = g.op("Tanh", [inner], name + "/tanh")
        shifted = g.op("Add", [tanh, g.const(1.0)], name + "/add")
        half_x = g.op("Mul", [x, g.const(0.5)], name + "/half")
        return g.op("Mul", [half_x, shifted], name)
    raise UnsupportedArchitectureError(
        f"activation {kind!r} is not supported; supported: {', '.join(ACTIVATIONS)}"
    )
