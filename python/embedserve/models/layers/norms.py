"""LayerNorm (with or without bias) and RMSNorm."""

from __future__ import annotations

from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.weights import Weights


def layer_norm(
    g: GraphBuilder,
    w: Weights,
    prefix: str,
    x: str,
    name: str,
    size: int,
    eps: float,
    bias: bool = True,
    output: str | None = None,
) -> str:
    """torch LayerNorm over the last axis; ``bias=False`` for ModernBERT-style norms."""
    inputs = [x, g.weight(prefix + ".weight", w.get(prefix + ".weight", (size,)))]
    if bias:
        inputs.append(g.weight(prefix + ".bias", w.get(prefix + ".bias", (size,))))
    return g.op("LayerNormalization", inputs, name, output=output, axis=-1, epsilon=eps)


def rms_norm(
    g: GraphBuilder,
    w: Weights,
    prefix: str,
    x: str,
    name: str,
    size: int,
    eps: float,
    output: str | None = None,
    offset: float = 0.0,
) -> str:
    """``(offset + weight) * x / sqrt(mean(x^2) + eps)`` over the last axis (Llama/Qwen
    RMSNorm; Gemma stores its weight as a difference from 1, so it passes ``offset=1``).

    Pow/ReduceMean/Add/Sqrt/Div/Mul is the pattern ONNX Runtime fuses into
    SimplifiedLayerNormalization; opset 17 has no RMSNormalization op of its own.
    """
    weight = w.get(prefix + ".weight", (size,))
    if offset:
        weight = weight + offset  # float32 stays float32: a Python float is a weak scalar
    weight = g.weight(prefix + ".weight", weight)
    squared = g.op("Pow", [x, g.const(2.0)], name + "/pow")
    mean = g.op("ReduceMean", [squared], name + "/mean", axes=[-1], keepdims=1)
    shifted = g.op("Add", [mean, g.const(eps)], name + "/add_eps")
    root = g.op("Sqrt", [shifted], name + "/sqrt")
    normed = g.op("Div", [x, root], name + "/div")
    return g.op("Mul", [normed, weight], name, output=output)
