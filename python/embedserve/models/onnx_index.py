"""Reading and rewriting an ONNX graph by name: who produces and who reads each value, which
values are constants, and putting a rewritten node list back in order. Shared by the passes
that fold the layer library's standard ops into fused kernels (fused_attention, fused_epilogues).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper


class GraphIndex:
    """One graph's values by name: what produces each, what reads it, which are constants."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.producer = {out: n for n in self.graph.node for out in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in self.graph.node:
            for name in n.input:
                self.consumers[name].append(n)
        self.initializers = {i.name: i for i in self.graph.initializer}
        self.outputs = {o.name for o in self.graph.output}

    def constant(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def scalar(self, name: str) -> float | None:
        """A constant holding one number, as a float."""
        value = self.constant(name)
        return None if value is None or value.size != 1 else float(value.reshape(()))

    def projection_bias(self, name: str) -> tuple[onnx.NodeProto, str, np.ndarray] | None:
        """(the Add, the product, the bias) when `name` is Add(MatMul output, constant float32
        [n]): a projection's bias, as `layers/linear.linear` writes it."""
        add = self.op(name, "Add")
        if add is None or self.op(add.input[0], "MatMul") is None:
            return None
        bias = self.constant(add.input[1])
        if bias is None or bias.ndim != 1 or bias.dtype != np.float32:
            return None
        return add, add.input[0], bias

    def op(self, name: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def only_use(self, node: onnx.NodeProto) -> bool:
        """Its output feeds one node and is no graph output: safe to fold away."""
        out = node.output[0]
        return len(self.consumers[out]) == 1 and out not in self.outputs


def topological_order(nodes: list[onnx.NodeProto], g: GraphIndex) -> list[onnx.NodeProto]:
    available = {i.name for i in g.graph.input} | {i.name for i in g.graph.initializer} | {""}
    pending, ordered = list(nodes), []
    while pending:
        waiting = []
        for n in pending:
            if all(name in available for name in n.input):
                ordered.append(n)
                available.update(n.output)
            else:
                waiting.append(n)
        if len(waiting) == len(pending):
            raise ValueError("a fused graph: the rewritten graph has a cycle or a missing input")
        pending = waiting
    return ordered


def drop_unused(model: onnx.ModelProto) -> None:
    """Drop what only the folded nodes read: the float padding mask's chain, the projections'
    bias initializers, the head-split shapes."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    kept = []
    for n in reversed(graph.node):
        if any(out in needed for out in n.output):
            kept.append(n)
            needed.update(n.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    used = {name for n in model.graph.node for name in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def replace_nodes(
    model: onnx.ModelProto,
    g: GraphIndex,
    folded: list[tuple[list[onnx.NodeProto], onnx.NodeProto]],
    first: list[onnx.NodeProto] = (),
) -> None:
    """Put each fused node where the first of the nodes it replaces stood (`folded`: the nodes,
    the replacement), `first` ahead of all; re-sort, and drop what only the folded nodes read."""
    removed = {id(n) for nodes, _ in folded for n in nodes}
    replacement = {id(nodes[0]): node for nodes, node in folded}
    kept: list[onnx.NodeProto] = list(first)
    for n in g.graph.node:
        if id(n) in replacement:
            kept.append(replacement[id(n)])
        elif id(n) not in removed:
            kept.append(n)
    # A replacement must come after every input it reads, which the first folded node's place
    # does not promise: re-sort.
    del g.graph.node[:]
    g.graph.node.extend(topological_order(kept, g))
    drop_unused(model)
