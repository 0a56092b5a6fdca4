"""Append pooling, an optional Matryoshka cut and L2 normalization to an encoder graph.

On a GPU this keeps the [batch, seq, hidden] states on the device: only the [batch, d]
float32 result is copied back. Semantics follow the C++ kernels (`_core.pool`,
`_core.cut_and_normalize`) that stay the CPU path:

- "mean": sum(h · m) / max(sum(m), 1e-9) over present tokens (an all-masked row gives zeros);
- "cls": the first present token (the [CLS] of a left-padded row); token 0 of an all-masked
  row, as sentence-transformers' argmax of an all-zero mask gives;
- "last": the present token with the highest index (an all-masked row gives zeros);
- the cut comes before normalization; normalization divides by max(‖x‖, 1e-12).

Only standard ops of opset 13+ whose signatures did not change up to opset 23 are used
(ReduceSum takes its axes as an input; no ReduceMax/ReduceL2), so any encoder graph works.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

POOLING_MODES = ("mean", "cls", "last")
POOLED_OUTPUT = "embeddings"
MIN_OPSET = 13


def hidden_state_output(graph: onnx.GraphProto) -> str:
    """The [batch, sequence, hidden] output, whatever the exporter called it."""
    outputs = [o for o in graph.output if len(o.type.tensor_type.shape.dim) == 3]
    for out in outputs:
        if out.name == "last_hidden_state":
            return out.name
    if not outputs:
        raise ValueError(
            f"no [batch, sequence, hidden] output among {[o.name for o in graph.output]}"
        )
    return outputs[0].name


def append_pooling(
    model: onnx.ModelProto, pooling: str, *, dimensions: int | None = None, normalize: bool = False
) -> onnx.ModelProto:
    """A copy of `model` whose only output is `embeddings`: float32 [batch, d]."""
    if pooling not in POOLING_MODES:
        raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise ValueError(
            f"in-graph pooling needs opset {MIN_OPSET} or newer, the graph has {opset}"
        )
    if "attention_mask" not in {i.name for i in model.graph.input}:
        raise ValueError("in-graph pooling needs an attention_mask input")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    hidden = hidden_state_output(graph)
    hidden_info = next(o for o in graph.output if o.name == hidden)
    width = hidden_info.type.tensor_type.shape.dim[2]
    if (
        dimensions is not None
        and width.HasField("dim_value")
        and not 1 <= dimensions <= width.dim_value
    ):
        raise ValueError(f"dimensions must be between 1 and {width.dim_value}, got {dimensions}")

    b = _Builder(graph)
    pooled = {"mean": _mean, "cls": _cls, "last": _last}[pooling](b, hidden)
    if dimensions is not None:
        pooled = b.op("Slice", [pooled, b.const([0]), b.const([dimensions]), b.const([1])], "cut")
    if normalize:
        pooled = _l2_normalize(b, pooled)
    b.op("Identity", [pooled], "output", output=POOLED_OUTPUT)

    size: str | int = (
        dimensions
        if dimensions is not None
        else (width.dim_value if width.HasField("dim_value") else "hidden")
    )
    batch = hidden_info.type.tensor_type.shape.dim[0]
    batch_dim: str | int = (
        batch.dim_value if batch.HasField("dim_value") else (batch.dim_param or "batch")
    )
    del graph.output[:]
    graph.output.append(
        helper.make_tensor_value_info(POOLED_OUTPUT, TensorProto.FLOAT, [batch_dim, size])
    )
    return out


class _Builder:
    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"pooling/{stem}_{self.count}"

    def const(self, value: object, dtype: type = np.int64) -> str:
        name = self.name("const")
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(
        self, op_type: str, inputs: list[str], stem: str, output: str | None = None, **attrs: object
    ) -> str:
        out = output or self.name(stem)
        self.graph.node.append(
            helper.make_node(op_type, inputs, [out], name=self.name(stem), **attrs)
        )
        return out


def _mask_as(b: _Builder, to: int) -> str:
    return b.op("Cast", ["attention_mask"], "mask", to=to)


def _sum_tokens(b: _Builder, x: str, keepdims: int) -> str:
    return b.op("ReduceSum", [x, b.const([1])], "sum_tokens", keepdims=keepdims)


def _mean(b: _Builder, hidden: str) -> str:
    mask = _mask_as(b, TensorProto.FLOAT)
    weights = b.op("Unsqueeze", [mask, b.const([2])], "mask_3d")
    summed = _sum_tokens(b, b.op("Mul", [hidden, weights], "masked"), keepdims=0)
    count = _sum_tokens(b, mask, keepdims=1)
    count = b.op("Max", [count, b.const([1e-9], np.float32)], "count")
    return b.op("Div", [summed, count], "mean")


def _cls(b: _Builder, hidden: str) -> str:
    # The first present token, as the C++ kernel takes it (the [CLS] of a left-padded row); an
    # all-masked row takes position 0. ArgMax keeps the first of equal maxima.
    mask = _mask_as(b, TensorProto.DOUBLE)
    first = b.op("ArgMax", [mask], "first", axis=1, keepdims=1)
    seq = b.op("Gather", [b.op("Shape", ["attention_mask"], "shape"), b.const(1)], "seq", axis=0)
    positions = b.op("Range", [b.const(0), seq, b.const(1)], "positions")
    chosen = b.op("Equal", [positions, first], "is_first")
    weights = b.op(
        "Unsqueeze",
        [b.op("Cast", [chosen], "first_f", to=TensorProto.FLOAT), b.const([2])],
        "first_3d",
    )
    return _sum_tokens(b, b.op("Mul", [hidden, weights], "selected"), keepdims=0)


def _last(b: _Builder, hidden: str) -> str:
    # One-hot on the highest present position, then a masked sum: no dynamic gather index.
    # Positions go through float64 so ArgMax stays exact past float16's 2,048 integers.
    mask = _mask_as(b, TensorProto.DOUBLE)
    seq = b.op("Gather", [b.op("Shape", ["attention_mask"], "shape"), b.const(1)], "seq", axis=0)
    positions = b.op("Range", [b.const(0), seq, b.const(1)], "positions")
    rank = b.op(
        "Add",
        [b.op("Cast", [positions], "positions_f", to=TensorProto.DOUBLE), b.const(1.0, np.float64)],
        "rank",
    )
    last = b.op("ArgMax", [b.op("Mul", [mask, rank], "ranked")], "last", axis=1, keepdims=1)
    present = b.op(
        "Greater", [_sum_tokens(b, mask, keepdims=1), b.const(0.0, np.float64)], "present"
    )
    chosen = b.op("And", [b.op("Equal", [positions, last], "is_last"), present], "chosen")
    weights = b.op(
        "Unsqueeze",
        [b.op("Cast", [chosen], "chosen_f", to=TensorProto.FLOAT), b.const([2])],
        "chosen_3d",
    )
    return _sum_tokens(b, b.op("Mul", [hidden, weights], "selected"), keepdims=0)


def _l2_normalize(b: _Builder, x: str) -> str:
    # Pow, not Mul(x, x): the fp16 pass keeps Pow and ReduceSum in float32, so squares of
    # large components cannot overflow.
    squares = b.op("Pow", [x, b.const(2.0, np.float32)], "squares")
    norm = b.op(
        "Sqrt", [b.op("ReduceSum", [squares, b.const([1])], "sum_squares", keepdims=1)], "norm"
    )
    norm = b.op("Max", [norm, b.const([1e-12], np.float32)], "norm_floor")
    return b.op("Div", [x, norm], "normalized")
