"""embedserve's attention kernel as an ONNX Runtime custom op (csrc/attention.cpp,
csrc/ortops/attention_op.cpp), held against ONNX Runtime's own com.microsoft.MultiHeadAttention
on the same inputs: the op is a drop-in for it (models/fused_attention.py writes either).

Every call the library makes into ONNX Runtime's C ABI (ort_abi.hpp's slots) is on a path
here: inputs and their shapes, a trailing optional input left out and one given as "", an
attribute present and absent, the output, the thread pool's parallel-for (2 threads), and an
error status (a bad shape)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from embedserve.models.fused_attention import MULTI_HEAD, PADDED, AttentionOp
from embedserve.runtime.custom_ops import (
    KERNEL_VARIABLE,
    attention_kernel,
    attention_op,
    library,
    register_library,
)
from onnx import TensorProto, helper

pytestmark = pytest.mark.skipif(library() is None, reason="the custom-op library was not built")


def _graph(
    op: AttentionOp,
    width: int,
    heads: int,
    *,
    bias: bool = True,
    position_bias: int | None = None,
    scale: float | None = None,
) -> bytes:
    """One attention node; `position_bias` is the bias's batch dimension (None: no bias)."""
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["B", "S", width]) for n in "qkv"]
    names = ["q", "k", "v", "bias" if bias else "", "mask"]
    if bias:
        inputs.append(helper.make_tensor_value_info("bias", TensorProto.FLOAT, [3 * width]))
    inputs.append(helper.make_tensor_value_info("mask", TensorProto.INT32, ["B", "S"]))
    if position_bias is not None:
        names.append("position")
        inputs.append(
            helper.make_tensor_value_info(
                "position", TensorProto.FLOAT, [position_bias, heads, "S", "S"]
            )
        )
    attributes = {"num_heads": heads} | ({"scale": scale} if scale is not None else {})
    node = helper.make_node(op.name, names, ["out"], domain=op.domain, **attributes)
    output = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", "S", width])
    model = helper.make_model(
        helper.make_graph([node], "attention", inputs, [output]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(op.domain, 1)],
    )
    model.ir_version = 8
    return model.SerializeToString()


def _session(graph: bytes, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    register_library(options)
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def _feeds(
    rng: np.random.Generator, lengths: list[int], seq: int, width: int
) -> dict[str, np.ndarray]:
    batch = len(lengths)
    feeds = {n: rng.standard_normal((batch, seq, width)).astype(np.float32) for n in "qkv"}
    feeds["mask"] = (np.arange(seq)[None, :] < np.array(lengths)[:, None]).astype(np.int32)
    return feeds


CASES = {
    # name: (lengths, seq, heads, head_dim)
    "minilm heads, padded": ([32, 5, 17, 1, 32, 9], 32, 12, 32),
    "base heads, padded": ([40, 3, 21], 40, 12, 64),
    "head_dim 24 (no compiled width), seq not a multiple of 16": ([7, 2, 5], 7, 4, 24),
    "one token": ([1, 1], 1, 2, 32),
    "long": ([300, 129], 300, 2, 64),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("threads", [1, 2])
def test_matches_onnxruntimes_attention(case: str, threads: int) -> None:
    lengths, seq, heads, head_dim = CASES[case]
    width = heads * head_dim
    rng = np.random.default_rng(len(case) + threads)
    feeds = _feeds(rng, lengths, seq, width)
    feeds["bias"] = rng.standard_normal(3 * width).astype(np.float32)
    want = _session(_graph(MULTI_HEAD, width, heads), 1).run(None, feeds)[0]
    got = _session(_graph(PADDED, width, heads), threads).run(None, feeds)[0]
    _assert_rows_equal(got, want, feeds["mask"])


def _assert_rows_equal(got: np.ndarray, want: np.ndarray, mask: np.ndarray) -> None:
    """Every row as ONNX Runtime's, the padding's too: its queries attend to the real keys
    (ColBERT's query expansion reads those vectors)."""
    assert mask.shape == got.shape[:2]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("bias_batch", [1, 3])
def test_position_bias_scale_and_no_bias(bias_batch: int) -> None:
    """A relative position bias (MPNet, T5, DeBERTa add one), T5's scale of 1, no q/k/v bias."""
    lengths, seq, heads, head_dim = [12, 4, 9], 12, 4, 32
    width = heads * head_dim
    rng = np.random.default_rng(bias_batch)
    feeds = _feeds(rng, lengths, seq, width)
    feeds["position"] = rng.standard_normal((bias_batch, heads, seq, seq)).astype(np.float32)
    graphs = [
        _graph(op, width, heads, bias=False, position_bias=bias_batch, scale=1.0)
        for op in (MULTI_HEAD, PADDED)
    ]
    want = _session(graphs[0], 1).run(None, feeds)[0]
    got = _session(graphs[1], 2).run(None, feeds)[0]
    _assert_rows_equal(got, want, feeds["mask"])


def test_masks_that_are_not_a_plain_prefix() -> None:
    """A zero inside a sequence's span (left padding, a hole) is masked the way ONNX Runtime
    masks it, and a sequence with no real token gets ONNX Runtime's uniform attention."""
    seq, heads, head_dim = 10, 2, 32
    width = heads * head_dim
    rng = np.random.default_rng(7)
    feeds = _feeds(rng, [10, 10, 10], seq, width)
    feeds["mask"][0, :3] = 0  # left padding
    feeds["mask"][1, 4] = 0  # a hole
    feeds["mask"][2, :] = 0  # nothing real
    feeds["bias"] = np.zeros(3 * width, np.float32)
    want = _session(_graph(MULTI_HEAD, width, heads), 1).run(None, feeds)[0]
    got = _session(_graph(PADDED, width, heads), 1).run(None, feeds)[0]
    _assert_rows_equal(got, want, feeds["mask"])


def test_a_bad_shape_is_an_error_not_a_crash() -> None:
    width, heads = 64, 2
    session = _session(_graph(PADDED, width, heads), 1)
    rng = np.random.default_rng(0)
    feeds = _feeds(rng, [4, 4], 4, width)
    feeds["bias"] = np.zeros(3 * width, np.float32)
    feeds["k"] = feeds["k"][:, :3]  # fewer keys than queries: not an encoder's self-attention
    with pytest.raises(Exception, match="PaddedAttention: key and value must have the query's"):
        session.run(None, feeds)


def test_sessions_pick_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KERNEL_VARIABLE, raising=False)
    assert attention_kernel() == "embedserve"
    assert attention_op(ort.SessionOptions()) == PADDED
    monkeypatch.setenv(KERNEL_VARIABLE, "onnxruntime")
    assert attention_op(ort.SessionOptions()) == MULTI_HEAD
    monkeypatch.setenv(KERNEL_VARIABLE, "fast")
    with pytest.raises(ValueError, match="EMBEDSERVE_ATTENTION_KERNEL='fast': expected one of"):
        attention_op(ort.SessionOptions())
