"""fp32 → fp16 graph pass: weights and activations in float16, fp32 where fidelity needs it.

Works on any graph of standard ops (no subgraphs), whatever architecture emitted it:

- float initializers and float-valued Constant/ConstantOfShape attributes become float16,
  clamped to ±65,504 (float32's min, used as an attention-mask value, would become -inf);
- `Cast(to=FLOAT)` becomes `Cast(to=FLOAT16)` so masks built in the graph stay in float16;
- ops in `keep_fp32` (reductions, powers and square roots: RMSNorm and decomposed-LayerNorm
  statistics, mean-pooling sums, L2 norms) run in float32 behind Cast nodes, and so does any
  elementwise or data-movement op with a computed float32 input (the `+ eps`, `/ n` after a
  reduction, `x / rms`), so a statistic never passes through float16;
- float graph inputs and outputs keep float32 (a Cast after the input, before the output),
  so callers feed and read the same arrays as with the fp32 graph.

LayerNormalization itself stays float16: the ONNX spec computes its mean and variance in
`stash_type` (float32 by default), and ONNX Runtime's CUDA kernel does so. Softmax stays
float16 too: ONNX Runtime's kernels accumulate float16 softmax in float32, and the Casts
around it would stop ONNX Runtime fusing attention. Both are measured in tests/models/test_fp16.py.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FP16_MAX = float(np.finfo(np.float16).max)

# Ops whose float work stays float32: statistics (sum of squares overflows float16 past
# |x| ≈ 256) and the reductions of pooling / normalization appended to the graph.
DEFAULT_KEEP_FP32 = frozenset(
    {
        "Pow",
        "Sqrt",
        "Reciprocal",
        "ReduceMean",
        "ReduceSum",
        "ReduceSumSquare",
        "ReduceL2",
        "ReduceLogSumExp",
        "RMSNormalization",
        "SimplifiedLayerNormalization",
    }
)
# Elementwise and data-movement ops follow their inputs: float32 when any computed (not
# constant) float input is, so a float32 statistic is applied in float32 and a float32 tail
# (pooling, normalization) is not narrowed by a Slice or Reshape on its way out.
FOLLOWERS = frozenset(
    {
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Max",
        "Min",
        "Clip",
        "Neg",
        "Abs",
        "Identity",
        "Slice",
        "Reshape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Expand",
        "Concat",
        "Gather",
        "Split",
    }
)
# Ops that take any tensor type and produce no float from it: never worth a Cast.
TYPE_AGNOSTIC = frozenset({"Shape", "Size"})
# Outputs that are float32 by definition whatever the op's input type (LayerNorm's stash_type).
FIXED_FP32_OUTPUTS = {"LayerNormalization": (1, 2)}


class Fp16ConversionError(ValueError):
    """The graph holds something the pass does not convert (a subgraph, an untyped value)."""


def convert_to_fp16(
    model: onnx.ModelProto, keep_fp32: Iterable[str] = DEFAULT_KEEP_FP32
) -> onnx.ModelProto:
    """A float16 copy of `model` (float32 in, float32 out); `model` is left untouched."""
    keep = frozenset(keep_fp32)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    elem = _elem_types(inferred.graph)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    for node in graph.node:
        if any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            for a in node.attribute
        ):
            raise Fp16ConversionError(
                f"node {node.name or node.op_type!r} has a subgraph; "
                "the fp16 pass handles flat graphs only"
            )
    _Pass(graph, elem, keep).run()
    del graph.value_info[:]  # stale float32 types; ONNX Runtime infers them again
    return out


def _elem_types(graph: onnx.GraphProto) -> dict[str, int]:
    types: dict[str, int] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        types[value.name] = value.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    return types


class _Pass:
    def __init__(self, graph: onnx.GraphProto, elem: dict[str, int], keep: frozenset[str]) -> None:
        self.graph = graph
        self.elem = elem
        self.keep = keep
        # The type each float value has after the pass, as its producer leaves it.
        self.now: dict[str, int] = {}
        self.casts: dict[tuple[str, int], str] = {}
        self.new_nodes: list[onnx.NodeProto] = []
        self.initializers = {init.name: init for init in graph.initializer}
        self.fp16_copies: dict[str, str] = {}

    def run(self) -> None:
        graph = self.graph
        outputs = {
            o.name for o in graph.output if o.type.tensor_type.elem_type == TensorProto.FLOAT
        }
        # Graph outputs keep their names and float32: the producer writes an internal name
        # and a final Cast restores the public one.
        internal = {name: f"{name}/fp16_internal" for name in outputs}
        for node in graph.node:
            node.input[:] = [internal.get(n, n) for n in node.input]
            node.output[:] = [internal.get(n, n) for n in node.output]
        for name, inner in internal.items():
            self.elem[inner] = self.elem.get(name, TensorProto.FLOAT)
        for value in graph.input:
            if value.type.tensor_type.elem_type == TensorProto.FLOAT:
                self.now[value.name] = TensorProto.FLOAT
        for node in graph.node:
            self._convert(node)
        for name, inner in internal.items():
            self.new_nodes.append(self._cast_node(inner, TensorProto.FLOAT, name))
        used = {i for n in self.new_nodes for i in n.input}
        kept = [i for i in graph.initializer if i.name in used]
        kept += [self.initializers[n] for n in self.fp16_copies.values()]
        del graph.initializer[:]
        graph.initializer.extend(kept)
        del graph.node[:]
        graph.node.extend(self.new_nodes)

    def _is_float(self, name: str) -> bool:
        return self.elem.get(name) == TensorProto.FLOAT

    def _mode(self, node: onnx.NodeProto) -> int:
        if node.op_type in self.keep:
            return TensorProto.FLOAT
        if node.op_type in FOLLOWERS:
            computed = [
                n for n in node.input if n and self._is_float(n) and n not in self.initializers
            ]
            if any(self.now.get(n) == TensorProto.FLOAT for n in computed):
                return TensorProto.FLOAT
        return TensorProto.FLOAT16

    def _convert(self, node: onnx.NodeProto) -> None:
        mode = self._mode(node)
        if node.op_type == "Cast":
            to = next(a for a in node.attribute if a.name == "to")
            if to.i == TensorProto.FLOAT and mode == TensorProto.FLOAT16:
                to.i = TensorProto.FLOAT16
        elif node.op_type not in TYPE_AGNOSTIC:
            node.input[:] = [self._input_as(name, mode) for name in node.input]
        if mode == TensorProto.FLOAT16:
            for attr in node.attribute:
                if (
                    attr.type == onnx.AttributeProto.TENSOR
                    and attr.t.data_type == TensorProto.FLOAT
                ):
                    attr.t.CopyFrom(_to_fp16_tensor(attr.t))
        fixed = FIXED_FP32_OUTPUTS.get(node.op_type, ())
        for index, name in enumerate(node.output):
            if name and self._is_float(name):
                self.now[name] = TensorProto.FLOAT if index in fixed else mode
        self.new_nodes.append(node)

    def _input_as(self, name: str, mode: int) -> str:
        if not name or not self._is_float(name):
            return name
        if name in self.initializers:
            return name if mode == TensorProto.FLOAT else self._fp16_initializer(name)
        if self.now.get(name, TensorProto.FLOAT) == mode:
            return name
        return self._cast(name, mode)

    def _fp16_initializer(self, name: str) -> str:
        if name not in self.fp16_copies:
            copy = _to_fp16_tensor(self.initializers[name])
            copy.name = f"{name}/fp16"
            self.initializers[copy.name] = copy
            self.fp16_copies[name] = copy.name
        return self.fp16_copies[name]

    def _cast(self, name: str, to: int) -> str:
        key = (name, to)
        if key not in self.casts:
            suffix = "fp32" if to == TensorProto.FLOAT else "fp16"
            self.casts[key] = f"{name}/to_{suffix}"
            self.new_nodes.append(self._cast_node(name, to, self.casts[key]))
        return self.casts[key]

    @staticmethod
    def _cast_node(source: str, to: int, target: str) -> onnx.NodeProto:
        return helper.make_node("Cast", [source], [target], name=f"{target}/cast", to=to)


def _to_fp16_tensor(tensor: onnx.TensorProto) -> onnx.TensorProto:
    array = numpy_helper.to_array(tensor)
    clipped = np.clip(array, -FP16_MAX, FP16_MAX).astype(np.float16)
    return numpy_helper.from_array(clipped, tensor.name)


def round_like_fp16_kernels(model16: onnx.ModelProto) -> onnx.ModelProto:
    """The fp16 graph with every op computed in float32 between float16 roundings.

    For checking fidelity where ONNX Runtime has no float16 kernels (x86 CPUs): its own
    fallback keeps chains of ops in float32 and so hides most of float16's rounding. Here each
    op's float16 inputs are widened and its outputs rounded back to float16, which is what a GPU
    kernel that accumulates in float32 does — and GPUs fuse ops, rounding less often than this.
    """
    inferred = onnx.shape_inference.infer_shapes(model16, strict_mode=True)
    elem = _elem_types(inferred.graph)
    out = onnx.ModelProto()
    out.CopyFrom(model16)
    graph = out.graph
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == "Cast":
            nodes.append(node)
            continue
        for slot, name in enumerate(node.input):
            if name and elem.get(name) == TensorProto.FLOAT16:
                wide = f"{name}/emulated_fp32/{node.name}"
                nodes.append(_Pass._cast_node(name, TensorProto.FLOAT, wide))
                node.input[slot] = wide
        rounded = []
        for slot, name in enumerate(node.output):
            if name and elem.get(name) == TensorProto.FLOAT16:
                node.output[slot] = f"{name}/emulated_fp32"
                rounded.append(_Pass._cast_node(node.output[slot], TensorProto.FLOAT16, name))
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT16:
                attr.t.CopyFrom(
                    numpy_helper.from_array(
                        numpy_helper.to_array(attr.t).astype(np.float32), attr.t.name
                    )
                )
        nodes.append(node)
        nodes.extend(rounded)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    return out
