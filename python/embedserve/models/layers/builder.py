"""The graph under construction: nodes, baked-in weights, shared constants, requested inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# The graph inputs an architecture may ask for, all int64 [batch, sequence]; the engine feeds
# whichever of them the compiled graph declares.
GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class GraphBuilder:
    """Accumulates nodes and initializers; hands out unique names for intermediate values.

    Layers call ``op`` with a scope-like ``name`` ("layer.3/attention/query"); the name doubles
    as the node's output name, so a graph read in Netron maps back to the layer that made it.
    """

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[str] = []
        self._constants: dict[tuple[str, bytes], str] = {}
        self._names: set[str] = set()
        # Values built once and reused by every layer (masks, rotary tables, sequence length).
        self.shared: dict[str, Any] = {}

    def input(self, name: str) -> str:
        """A graph input (one of GRAPH_INPUTS); declared on first use, in GRAPH_INPUTS order."""
        if name not in GRAPH_INPUTS:
            raise ValueError(f"unknown graph input {name!r}; known: {GRAPH_INPUTS}")
        if name not in self.inputs:
            self.inputs.append(name)
            self.inputs.sort(key=GRAPH_INPUTS.index)
        return name

    def weight(self, name: str, array: np.ndarray) -> str:
        """A named initializer (a checkpoint tensor or something derived from one)."""
        name = self._unique(name)
        # np.asarray, not np.ascontiguousarray: the latter turns 0-d scalars into shape (1,).
        self.initializers.append(numpy_helper.from_array(np.asarray(array, order="C"), name))
        return name

    def const(self, value: Any, dtype: type = np.float32) -> str:
        """A small constant, shared by every node that needs the same value."""
        array = np.asarray(value, dtype=dtype)
        key = (str(array.dtype) + str(array.shape), array.tobytes())
        if key not in self._constants:
            self._constants[key] = self.weight(f"const_{len(self._constants)}", array)
        return self._constants[key]

    def op(
        self, op_type: str, inputs: list[str], name: str, output: str | None = None, **attrs: Any
    ) -> str:
        """Append one node; returns its (single) output's name."""
        name = self._unique(name)
        out = output or name
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def ops(
        self, op_type: str, inputs: list[str], name: str, outputs: int, **attrs: Any
    ) -> list[str]:
        """Append one node with several outputs (Split)."""
        name = self._unique(name)
        outs = [f"{name}:{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs

    def model(
        self, outputs: list[onnx.ValueInfoProto], name: str, doc: str, opset: int, ir_version: int
    ) -> onnx.ModelProto:
        dims = ["batch", "sequence"]
        inputs = [helper.make_tensor_value_info(i, TensorProto.INT64, dims) for i in self.inputs]
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", opset)],
            producer_name="embedserve",
            doc_string=doc,
        )
        model.ir_version = ir_version
        return model

    def _unique(self, name: str) -> str:
        if name in self._names:
            n = 1
            while f"{name}_{n}" in self._names:
                n += 1
            name = f"{name}_{n}"
        self._names.add(name)
        return name
