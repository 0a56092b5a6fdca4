"""The CUDA path's pieces, run with the CPU provider: in-graph pooling, IOBinding, the pipeline.

In-graph pooling is checked against the C++ kernels (the CPU path) on random hidden states
and awkward masks; the IOBinding session against the plain session; the pipeline against
`Engine.embed`. Only speed and the CUDA copies themselves need the GPU.
"""

from __future__ import annotations

import functools
import threading

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from embedserve import _core
from embedserve.engine import Engine
from embedserve.errors import InputError, InputTooLongError
from embedserve.models import onnx_for
from embedserve.models.config import load_model_config
from embedserve.models.fp16 import convert_to_fp16
from embedserve.models.pooling_graph import POOLED_OUTPUT, append_pooling
from embedserve.models.variants import graph_for
from embedserve.pipeline import Pipeline
from embedserve.precision import get_precision
from embedserve.runtime import EncoderSession
from embedserve.runtime.cuda import BoundEncoderSession, bucket_shape, on_gpu
from embedserve.tokenization import ModelTokenizer
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from bench.texts import make_texts

FP16_COSINE = 0.9999


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _passthrough(width: int = 8) -> onnx.ModelProto:
    """A stand-in encoder whose hidden states are an input, so tests choose them."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["hidden"], ["last_hidden_state"])],
        "stand_in",
        [
            helper.make_tensor_value_info(
                "hidden", TensorProto.FLOAT, ["batch", "sequence", width]
            ),
            helper.make_tensor_value_info(
                "attention_mask", TensorProto.INT64, ["batch", "sequence"]
            ),
        ],
        [
            helper.make_tensor_value_info(
                "last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", width]
            )
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@functools.cache
def _pooling_session(
    mode: str, dimensions: int | None, normalize: bool, fp16: bool
) -> ort.InferenceSession:
    model = append_pooling(_passthrough(), mode, dimensions=dimensions, normalize=normalize)
    return _session(convert_to_fp16(model) if fp16 else model)


@settings(max_examples=40, deadline=None)
@given(
    mode=st.sampled_from(["mean", "cls", "last"]),
    cut=st.sampled_from([(None, False), (None, True), (3, True), (5, False)]),
    rows=st.integers(1, 5),
    seq=st.integers(1, 9),
    seed=st.integers(0, 2**16),
)
def test_in_graph_pooling_matches_the_cpp_kernels(mode, cut, rows, seq, seed):
    dimensions, normalize = cut
    rng = np.random.default_rng(seed)
    hidden = rng.normal(0, 3, (rows, seq, 8)).astype(np.float32)
    mask = (rng.random((rows, seq)) < 0.6).astype(np.int64)  # gaps, and all-masked rows
    mask[0] = 0
    expected = _core.cut_and_normalize(_core.pool(hidden, mask, mode), dimensions, normalize)
    feeds = {"hidden": hidden, "attention_mask": mask}
    (got,) = _pooling_session(mode, dimensions, normalize, False).run([POOLED_OUTPUT], feeds)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # The fp16 graph takes float16-rounded states but still pools and normalizes in float32.
    rounded = hidden.astype(np.float16).astype(np.float32)
    expected16 = _core.cut_and_normalize(_core.pool(rounded, mask, mode), dimensions, normalize)
    (got16,) = _pooling_session(mode, dimensions, normalize, True).run([POOLED_OUTPUT], feeds)
    assert got16.dtype == np.float32
    np.testing.assert_allclose(got16, expected16, rtol=2e-3, atol=2e-3)


def test_last_pooling_is_exact_past_float16_integers():
    seq = 3_001  # float16 has no exact integers past 2,048: positions stay float64
    hidden = np.arange(seq, dtype=np.float32)[None, :, None].repeat(8, axis=2)
    mask = np.ones((1, seq), dtype=np.int64)
    mask[0, 2_999:] = 0
    (got,) = _pooling_session("last", None, False, True).run(
        [POOLED_OUTPUT], {"hidden": hidden, "attention_mask": mask}
    )
    assert got[0, 0] == np.float32(np.float16(2_998))


def test_pooling_pass_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="pooling must be one of"):
        append_pooling(_passthrough(), "max")
    with pytest.raises(ValueError, match="dimensions must be between 1 and 8"):
        append_pooling(_passthrough(), "mean", dimensions=9)


@pytest.mark.parametrize(
    ("rows", "seq", "bucket"),
    [
        (1, 1, (1, 16)),
        (3, 16, (4, 16)),
        (5, 17, (8, 32)),
        (64, 30, (64, 32)),
        (65, 250, (128, 256)),
        (200, 256, (256, 256)),
        (3, 250, (4, 256)),
    ],
)
def test_bucket_shapes(rows, seq, bucket):
    assert bucket_shape(rows, seq, max_sequence=256) == bucket


def test_bucket_never_passes_the_position_table_nor_cuts_the_batch():
    assert bucket_shape(2, 510, max_sequence=514) == (2, 512)
    assert bucket_shape(2, 513, max_sequence=514) == (2, 514)
    assert bucket_shape(2, 600, max_sequence=514) == (2, 600)
    with pytest.raises(ValueError, match="at least one row"):
        bucket_shape(0, 5)


@pytest.fixture(scope="module")
def plain(minilm_dir) -> EncoderSession:
    return EncoderSession(onnx_for(minilm_dir))


@pytest.fixture(scope="module")
def bound(minilm_dir) -> BoundEncoderSession:
    return BoundEncoderSession(onnx_for(minilm_dir, pooling="mean"), max_sequence=256)


def _batch(
    rng: np.random.Generator, rows: int, seq: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = rng.integers(1_000, 20_000, (rows, seq))
    mask = np.ones_like(ids)
    lengths = rng.integers(1, seq + 1, rows)
    lengths[0] = seq
    for row, length in enumerate(lengths):
        ids[row, length:] = 0
        mask[row, length:] = 0
    return ids, mask, np.zeros_like(ids)


def test_iobinding_session_pools_like_the_plain_session(plain, bound):
    assert bound.pooled and bound.hidden_size == 384 and bound.device == "cpu"
    rng = np.random.default_rng(1)
    earlier = []
    for rows, seq in [(3, 7), (5, 20), (3, 9), (70, 33), (3, 7)]:  # bucket (4, 16) comes back
        batch = _batch(rng, rows, seq)
        expected = _core.pool(plain.run(*batch), batch[1], "mean")
        got = bound.run(*batch)
        assert got.shape == (rows, 384)
        np.testing.assert_allclose(got, expected, atol=2e-5)
        earlier.append((got.copy(), got))
    # Results are the caller's: reusing a bucket's buffers does not overwrite them.
    assert all(np.array_equal(copy, result) for copy, result in earlier)


def test_iobinding_session_returns_hidden_states_for_an_unpooled_graph(minilm_dir, plain):
    session = BoundEncoderSession(onnx_for(minilm_dir), max_sequence=256)
    assert not session.pooled
    batch = _batch(np.random.default_rng(2), 6, 11)
    np.testing.assert_allclose(session.run(*batch), plain.run(*batch), atol=2e-5)


def test_iobinding_session_runs_from_several_threads(plain, bound):
    rng = np.random.default_rng(3)
    batches = [_batch(rng, int(rng.integers(1, 9)), int(rng.integers(2, 30))) for _ in range(12)]
    expected = [_core.pool(plain.run(*b), b[1], "mean") for b in batches]
    results: dict[int, np.ndarray] = {}

    def work(index: int) -> None:
        results[index] = bound.run(*batches[index])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for index, want in enumerate(expected):
        np.testing.assert_allclose(results[index], want, atol=2e-5)


@pytest.fixture(scope="module")
def gpu_style_engine(minilm_dir) -> Engine:
    """The engine as CUDA builds it (fp16, pooled graph, IOBinding), on the CPU provider."""
    config = load_model_config(minilm_dir, "all-MiniLM-L6-v2")
    session = BoundEncoderSession(
        graph_for(minilm_dir, get_precision("fp16"), pooling=config.pooling),
        max_sequence=config.max_seq_length,
    )
    tokenizer = ModelTokenizer(minilm_dir / "tokenizer.json", config.max_seq_length)
    return Engine(config, tokenizer, session, max_batch_tokens=4_096)


def test_gpu_style_engine_matches_sentence_transformers(gpu_style_engine, reference):
    texts = reference["texts"][::4]
    result = gpu_style_engine.embed(texts)
    assert _cosines(result.embeddings, reference["normalized"][::4]).min() >= FP16_COSINE
    np.testing.assert_allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, rtol=1e-5)
    cut = gpu_style_engine.embed(texts[:5], dimensions=64).embeddings
    assert cut.shape == (5, 64)
    assert gpu_style_engine.model_info.dimension == 384


def test_cpu_providers_keep_the_cpu_path(minilm_dir):
    assert not on_gpu("cpu")
    engine = Engine.from_pretrained(minilm_dir, providers="cpu")
    assert type(engine.session) is EncoderSession and not engine.session.pooled


def test_pipeline_gives_the_engines_vectors_in_order(gpu_style_engine):
    texts = make_texts("mix", 96, seed=3)
    expected = gpu_style_engine.embed(texts, dimensions=100)
    pipeline = Pipeline(gpu_style_engine, tokenize_threads=3, in_flight=2, chunk_texts=20)
    try:
        got = pipeline.embed(texts, dimensions=100)
        np.testing.assert_array_equal(got.token_counts, expected.token_counts)
        np.testing.assert_allclose(got.embeddings, expected.embeddings, atol=1e-6)
        # An error names the input by its place in the whole list, not in its chunk.
        with pytest.raises(InputTooLongError, match=r"input\[150\]"):
            pipeline.embed(["short"] * 150 + ["word " * 400], truncate=False)
        with pytest.raises(InputError, match="normalize must be True, False or None"):
            pipeline.embed(["x"], normalize="no")  # type: ignore[arg-type]
        with pytest.raises(InputError, match="truncation_direction must be one of"):
            pipeline.embed(["x"], truncation_direction="middle")
    finally:
        pipeline.close()


def test_a_gpu_provider_that_does_not_start_is_named_in_a_warning(minilm_dir, monkeypatch, caplog):
    """Where CUDA's libraries do not load, ONNX Runtime falls back to the CPU by itself instead of
    raising, so the warning meant for a broken CUDA install never came: the model ran on the CPU
    with no word from embedserve."""
    from embedserve.runtime import session as session_module
    from embedserve.runtime.providers import CPU, CUDA, cuda_device_present

    if cuda_device_present() or CUDA not in ort.get_available_providers():
        pytest.skip("needs an onnxruntime with a CUDA provider that cannot start here")
    monkeypatch.setattr(session_module, "resolve_providers", lambda _: [CUDA, CPU])
    with caplog.at_level("WARNING", logger=session_module.__name__):
        opened = session_module.open_session(onnx_for(minilm_dir), session_module.SessionOptions())
    assert opened.get_providers() == [CPU]
    assert f"could not start {CUDA} (ONNX Runtime's log says why); using the CPU" in caplog.text
