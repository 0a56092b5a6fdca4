"""The cheap check that a cached ONNX file is whole (models/graph_file.py), at every cut."""

from __future__ import annotations

import numpy as np
from embedserve.models.graph_file import onnx_file_is_whole
from onnx import TensorProto, helper, numpy_helper


def _graph_bytes() -> bytes:
    weight = numpy_helper.from_array(np.arange(64, dtype=np.float32).reshape(8, 8), "w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_only_the_whole_file_is_whole(tmp_path):
    data = _graph_bytes()
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    assert onnx_file_is_whole(path)
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        assert not onnx_file_is_whole(path), cut
    path.write_bytes(data + b"\x00")  # field 0 with no value: not protobuf
    assert not onnx_file_is_whole(path)
