"""embedserve's one-pass kernels for the work between an encoder's matrix products
(csrc/epilogues.cpp, csrc/ortops/epilogue_ops.cpp), run by ONNX Runtime as custom ops, held
against float64 references: GELU with math.erf, LayerNorm in NumPy."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
from embedserve.runtime.custom_ops import library, register_library
from onnx import TensorProto, helper

pytestmark = pytest.mark.skipif(library() is None, reason="the custom-op library was not built")


def _run(op: str, inputs: list[np.ndarray | None], threads: int = 1, **attributes) -> np.ndarray:
    names = [f"in{i}" if a is not None else "" for i, a in enumerate(inputs)]
    declared = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape))
        for n, a in zip(names, inputs, strict=True)
        if a is not None
    ]
    node = helper.make_node(op, names, ["out"], domain="ai.embedserve", **attributes)
    output = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    model = helper.make_model(
        helper.make_graph([node], op, declared, [output]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.embedserve", 1)],
    )
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    register_library(options)
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    feeds = {n: a for n, a in zip(names, inputs, strict=True) if a is not None}
    return session.run(None, feeds)[0]


def _gelu(v: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf)
    return 0.5 * v * (1.0 + erf(v / math.sqrt(2.0)))


# Shapes: a last axis that is and is not a multiple of 16 (the vector width), rows that are
# not a multiple of the 16 a thread takes at a time, 2-D and 3-D.
SHAPES = [(3, 37, 1536), (5, 50), (1, 1, 7), (33, 384)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("threads", [1, 2])
def test_bias_gelu(shape: tuple[int, ...], threads: int) -> None:
    rng = np.random.default_rng(sum(shape) + threads)
    x = (rng.standard_normal(shape) * 3).astype(np.float32)  # out to |v| ~ 12: both tails
    bias = rng.standard_normal(shape[-1]).astype(np.float32)
    got = _run("BiasGelu", [x, bias], threads)
    want = _gelu(x.astype(np.float64) + bias)
    # Abramowitz & Stegun's erf is within 1.5e-7, so GELU within ~|v| * 1e-7.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 + 2e-7 * np.abs(want).max())
    assert np.abs(got - want).max() < 2e-6


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("beta", [True, False])
def test_bias_residual_layer_norm(shape: tuple[int, ...], beta: bool) -> None:
    rng = np.random.default_rng(sum(shape) + beta)
    x, residual = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    bias, gamma, shift = (rng.standard_normal(shape[-1]).astype(np.float32) for _ in range(3))
    got = _run(
        "BiasResidualLayerNorm",
        [x, bias, residual, gamma, shift if beta else None],
        threads=2,
        epsilon=1e-12,
    )
    s = (x.astype(np.float64) + bias) + residual
    mean = s.mean(-1, keepdims=True)
    scale = 1.0 / np.sqrt(((s - mean) ** 2).mean(-1, keepdims=True) + 1e-12)
    want = (s - mean) * scale * gamma + (shift if beta else 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)


def test_bad_shapes_are_errors() -> None:
    x = np.ones((2, 16), np.float32)
    with pytest.raises(Exception, match="BiasGelu: bias must be \\[cols\\]"):
        _run("BiasGelu", [x, np.ones(8, np.float32)])
    with pytest.raises(Exception, match="BiasResidualLayerNorm: residual must have x's shape"):
        _run("BiasResidualLayerNorm", [x, *[np.ones(16, np.float32)] * 1, x[:1], x[0], None])
