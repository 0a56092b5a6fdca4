"""What ONNX Runtime actually runs for a CPU session after its own passes: embedserve's kernels,
and not ORT's SkipLayerNormalization, which is ~4x slower on the CPU than the Add +
LayerNormalization it replaces (bench/NOTES.md, wave 11). In the int8 graphs ORT fused the
residual norms after its MatMulIntegerToFloat, out of reach of our own epilogue pass."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from embedserve.engine import Engine
from embedserve.loading import LoadOptions
from embedserve.runtime.custom_ops import library
from embedserve.runtime.session import SessionOptions, open_session

pytestmark = pytest.mark.skipif(library() is None, reason="the custom-op library was not built")


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_cpu_sessions_run_our_kernels_and_no_skip_layer_norm(precision: str, tmp_path: Path):
    engine = Engine.from_pretrained(
        "all-MiniLM-L6-v2", options=LoadOptions(precision=precision, providers="cpu")
    )
    ran = tmp_path / "optimized.onnx"
    open_session(Path(engine.session.path), SessionOptions(providers="cpu"), optimized_graph=ran)
    ops = [node.op_type for node in onnx.load(str(ran)).graph.node]
    assert ops.count("PaddedAttention") == 6  # one per layer
    assert ops.count("BiasGelu") == 6
    assert "SkipLayerNormalization" not in ops
    # The 12 residual norms: our fused op where the pass took them, else ONNX Runtime's plain one.
    assert ops.count("BiasResidualLayerNorm") + ops.count("LayerNormalization") >= 12
