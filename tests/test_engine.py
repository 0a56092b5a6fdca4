"""The engine against sentence-transformers' own vectors for all-MiniLM-L6-v2."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from embedserve.engine import Engine
from embedserve.errors import InputError, InputTooLongError, InvalidTokenError
from embedserve.planning import LANE_AUTO_MAX_BYTES, lane_threads
from tokenizers import Tokenizer

from .support import FP32_COSINE, cosines


@pytest.fixture(scope="module")
def engine(minilm_dir) -> Engine:
    return Engine.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def raw_tokenizer(minilm_dir) -> Tokenizer:
    tok = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def test_model_info_comes_from_the_model_files(engine):
    info = engine.model_info
    assert (info.dimension, info.max_tokens, info.pooling, info.normalize) == (
        384,
        256,
        "mean",
        True,
    )
    assert info.supports_dimensions is False
    assert info.provider == "CPUExecutionProvider"


def test_compiled_model_matches_sentence_transformers_normalized(engine, reference):
    result = engine.embed(reference["texts"])
    assert result.embeddings.shape == (200, 384) and result.embeddings.dtype == np.float32
    cos = cosines(result.embeddings, reference["normalized"])
    assert cos.min() >= FP32_COSINE, f"worst text {cos.argmin()}: {cos.min()}"
    np.testing.assert_allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, rtol=1e-5)
    assert result.token_counts.tolist() == reference["tokens_truncated"]
    assert result.total_tokens == sum(reference["tokens_truncated"])


def test_compiled_model_matches_sentence_transformers_unnormalized(engine, reference):
    # all-MiniLM's modules.json ends in a Normalize module, so sentence-transformers' "unnormalized"
    # encode is unit length too: the engine's default must equal it value for value.
    default = engine.embed(reference["texts"]).embeddings
    np.testing.assert_allclose(default, reference["unnormalized"], atol=2e-5)
    raw = engine.embed(reference["texts"], normalize=False).embeddings
    assert cosines(raw, reference["unnormalized"]).min() >= FP32_COSINE
    assert np.linalg.norm(raw, axis=1).min() > 1.2  # the mean-pooled vectors, before any scaling


def test_results_keep_input_order_when_lengths_are_shuffled(engine, reference):
    order = np.random.default_rng(7).permutation(len(reference["texts"]))
    vectors = engine.embed([reference["texts"][i] for i in order]).embeddings
    assert cosines(vectors, reference["normalized"][order]).min() >= FP32_COSINE


def test_small_token_budget_gives_the_same_vectors(minilm_dir, reference):
    tight = Engine.from_pretrained(minilm_dir, max_batch_tokens=300)
    texts = reference["texts"][:40]
    assert cosines(tight.embed(texts).embeddings, reference["normalized"][:40]).min() >= FP32_COSINE


def test_truncate_false_rejects_exactly_the_long_texts(engine, reference):
    long_ones = [i for i, n in enumerate(reference["tokens_untruncated"]) if n > 256]
    assert long_ones, "the reference should hold texts over the limit"
    rejected = []
    for index, text in enumerate(reference["texts"]):
        try:
            engine.prepare([text], truncate=False)
        except InputTooLongError as exc:
            rejected.append(index)
            assert (exc.tokens, exc.limit) == (reference["tokens_untruncated"][index], 256)
            assert f"has {exc.tokens} tokens" in str(exc) and "256" in str(exc)
    assert rejected == long_ones


def test_truncate_false_error_names_the_input_index(engine, reference):
    long_index = next(i for i, n in enumerate(reference["tokens_untruncated"]) if n > 256)
    batch = ["short", "also short", reference["texts"][long_index]]
    with pytest.raises(InputTooLongError, match=r"input\[2\]") as info:
        engine.embed(batch, truncate=False)
    assert info.value.index == 2


def test_token_arrays_give_the_same_vectors_as_their_texts(engine, reference, raw_tokenizer):
    texts = reference["texts"][:30]
    arrays = [raw_tokenizer.encode(t, add_special_tokens=False).ids for t in texts]
    from_tokens = engine.embed(arrays)
    from_texts = engine.embed(texts)
    assert cosines(from_tokens.embeddings, from_texts.embeddings).min() >= 0.999999
    assert from_tokens.token_counts.tolist() == from_texts.token_counts.tolist()
    single = engine.embed(arrays[3]).embeddings
    assert single.shape == (1, 384)
    assert cosines(single, from_texts.embeddings[3:4])[0] >= 0.999999


def test_long_token_arrays_are_truncated_like_texts(engine, reference, raw_tokenizer):
    index = next(i for i, n in enumerate(reference["tokens_untruncated"]) if n > 256)
    ids = raw_tokenizer.encode(reference["texts"][index], add_special_tokens=False).ids
    vector = engine.embed([ids]).embeddings
    assert cosines(vector, reference["normalized"][index : index + 1])[0] >= FP32_COSINE
    with pytest.raises(InputTooLongError):
        engine.embed([ids], truncate=False)


def test_token_ids_outside_the_vocabulary_are_rejected_with_their_index(engine):
    with pytest.raises(InvalidTokenError, match=r"input\[1\].*30522") as info:
        engine.embed([[101, 102], [7, 30522]])
    assert info.value.index == 1
    with pytest.raises(InvalidTokenError, match=r"-1"):
        engine.embed([[-1]])


def test_mixed_or_wrongly_typed_inputs_are_rejected(engine):
    with pytest.raises(InputError, match=r"input\[1\]"):
        engine.embed(["text", [1, 2]])
    with pytest.raises(InputError, match="integers"):
        engine.embed([[1, 2.5]])
    with pytest.raises(InputError):
        engine.embed(42)  # type: ignore[arg-type]


def test_numpy_token_ids_are_token_ids(engine):
    """list(ids) of a NumPy array holds np.int64: it was refused as "input[0] is a int64,
    expected an array of integers like input[0]"."""
    ids = np.array([101, 7592, 2088, 102], dtype=np.int64)
    expected = engine.embed([ids.tolist()]).embeddings
    np.testing.assert_array_equal(engine.embed(list(ids)).embeddings, expected)
    np.testing.assert_array_equal(engine.embed([list(ids)]).embeddings, expected)
    with pytest.raises(InvalidTokenError, match="30522"):
        engine.embed([np.uint64(30522)])
    with pytest.raises(InputError, match=r"not ndarray \(pass its .tolist\(\)\)"):
        engine.embed(ids)  # type: ignore[arg-type]
    with pytest.raises(
        InputError, match=r"input\[0\] is a bool \(np.True_\): an array must hold only"
    ):
        engine.embed([np.bool_(True)])


def test_left_truncation_keeps_the_end_of_the_text(engine, reference, raw_tokenizer):
    index = next(i for i, n in enumerate(reference["tokens_untruncated"]) if n > 256)
    ids = raw_tokenizer.encode(reference["texts"][index], add_special_tokens=False).ids
    left = engine.embed([reference["texts"][index]], truncation_direction="left").embeddings
    tail = engine.embed([ids[-254:]]).embeddings
    head = engine.embed([reference["texts"][index]]).embeddings
    assert cosines(left, tail)[0] >= 0.999999
    assert cosines(left, head)[0] < 0.999
    with pytest.raises(InputError, match="truncation_direction"):
        engine.embed(["x"], truncation_direction="middle")


def test_dimensions_cut_then_renormalize(engine, reference):
    vectors = engine.embed(reference["texts"], dimensions=128).embeddings
    assert vectors.shape == (200, 128) and vectors.flags.c_contiguous
    expected = reference["normalized"][:, :128]
    expected = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    assert cosines(vectors, expected).min() >= FP32_COSINE
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("bad", [0, -3, 385, True, 2.5, 8.0, "8", np.True_, 2**70, 10**30])
def test_dimensions_outside_the_model_range_are_value_errors(engine, bad):
    with pytest.raises(InputError, match="between 1 and 384"):
        engine.embed(["x"], dimensions=bad)


@pytest.mark.parametrize("bad", ["no", "false", 0.5, [True], 1, np.array([True])])
def test_normalize_that_is_not_a_bool_is_an_input_error(engine, bad):
    """Refused at the boundary, before the model runs, not by pybind11 after it (whose
    TypeError printed the pooled matrix) nor taken for its truthiness ("false" normalized)."""
    with pytest.raises(InputError, match="normalize must be True, False or None, got ") as caught:
        engine.embed(["x"], normalize=bad)
    assert caught.value.param == "normalize"


def test_numpy_bool_normalize_is_taken(engine):
    want = engine.embed(["a cat"], normalize=False).embeddings
    np.testing.assert_array_equal(engine.embed(["a cat"], normalize=np.False_).embeddings, want)


def test_numpy_integer_dimensions_are_taken(engine):
    want = engine.embed(["a cat"], dimensions=8).embeddings
    np.testing.assert_array_equal(engine.embed(["a cat"], dimensions=np.int64(8)).embeddings, want)


@pytest.mark.parametrize("bad", [1.5, 384.0, "8"])
def test_dimensions_of_another_type_are_input_errors_before_the_model_runs(engine, bad):
    """Not a TypeError from a comparison, nor one from the C++ kernel after the model ran."""
    engine.session.run = None  # the model must not be reached: calling it would raise TypeError
    try:
        with pytest.raises(InputError, match="dimensions must be between 1 and 384"):
            engine.embed(["x"], dimensions=bad)
    finally:
        del engine.session.run


def test_tokenize_returns_what_the_model_sees(engine, reference, raw_tokenizer):
    texts = reference["texts"]
    ids = engine.tokenize(texts)
    assert [len(x) for x in ids] == reference["tokens_truncated"]
    long_index = next(i for i, n in enumerate(reference["tokens_untruncated"]) if n > 256)
    full = raw_tokenizer.encode(texts[long_index]).ids
    assert ids[long_index] == full[:255] + [102]
    assert ids[0] == raw_tokenizer.encode(texts[0]).ids


@pytest.mark.parametrize(
    "bad, message",
    [
        (None, "texts must be a string or an array of strings, not NoneType"),
        (b"bytes", "texts must be a string or an array of strings, not bytes"),
        ([101, 102], r"texts\[0\] is an int \(101\), expected a string"),
        ([[101, 102]], r"texts\[0\] is an array of integers, expected a string"),
        (["a", None], r"texts\[1\] is None, expected a string"),
    ],
)
def test_tokenize_and_embed_all_take_only_texts(engine, bad, message):
    """Not a TypeError from inside the tokenizer."""
    for call in (engine.tokenize, engine.embed_all):
        with pytest.raises(InputError, match=message) as caught:
            call(bad)
        assert caught.value.param == "texts"
    assert engine.tokenize(text for text in ["a"]) == engine.tokenize(["a"]) == [[101, 1037, 102]]


def test_similarity_checks_its_arguments(engine):
    for source in (None, [101, 102], ["a", "b"]):
        with pytest.raises(InputError, match="source_sentence must be a string") as caught:
            engine.similarity(source, ["a"])  # type: ignore[arg-type]
        assert caught.value.param == "source_sentence"
    for sentences in ("a", [], None, np.array(["a", "b"]), [1, 2], ["a", None]):
        with pytest.raises(InputError, match="sentences") as caught:
            engine.similarity("a", sentences)  # type: ignore[arg-type]
        assert caught.value.param == "sentences"
    scores = engine.similarity("a cat", ("a cat", "stock markets"))
    assert scores.shape == (2,) and scores[0] == pytest.approx(1.0, abs=1e-6)
    assert scores[1] < 0.5


def test_a_lone_surrogate_is_an_input_error_naming_the_input(engine):
    """Not valid UTF-8 (a JSON escape or surrogateescape'd bytes give one): the tokenizer's own
    TypeError named no input."""
    with pytest.raises(InputError, match=r"input\[1\] is not valid UTF-8 text") as caught:
        engine.embed(["fine", "bad \ud800 text"])
    assert caught.value.index == 1
    with pytest.raises(InputError, match="input is not valid UTF-8 text"):
        engine.embed("\udcff")
    with pytest.raises(InputError, match=r"texts\[0\] is not valid UTF-8 text"):
        engine.tokenize(["\ud800"])
    assert engine.embed(["caf\u00e9 \U0001f600"]).embeddings.shape == (1, 384)


def test_unknown_prompt_name_is_an_error(engine):
    with pytest.raises(InputError, match="prompt_name 'passage'"):
        engine.embed(["x"], prompt_name="passage")
    # Token arrays take no prompt, but a name the model does not have is still no silent no-op.
    with pytest.raises(InputError, match="prompt_name 'passage'"):
        engine.embed([[101, 102]], prompt_name="passage")
    np.testing.assert_array_equal(
        engine.embed([[101, 102]], prompt_name="query").embeddings,
        engine.embed([[101, 102]]).embeddings,
    )
    # sentence-transformers gives every model empty "query" and "document" prompts.
    for name in ("query", "document"):
        same = engine.embed(["x"], prompt_name=name).embeddings
        np.testing.assert_array_equal(same, engine.embed(["x"]).embeddings)


def test_empty_input_list_gives_an_empty_result(engine):
    result = engine.embed([])
    assert result.embeddings.shape == (0, 384) and result.total_tokens == 0


def test_concurrent_calls_from_threads_each_get_their_own_vectors(engine, reference):
    chunks = [reference["texts"][i::6] for i in range(6)]
    expected = [reference["normalized"][i::6] for i in range(6)]
    results: dict[int, np.ndarray] = {}

    def work(k: int) -> None:
        results[k] = engine.embed(chunks[k]).embeddings

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(6):
        assert cosines(results[k], expected[k]).min() >= FP32_COSINE


@pytest.mark.parametrize(
    ("threads", "mode", "lane"), [(1, "on", 0), (2, "auto", 1), (5, "auto", 0), (5, "on", 4)]
)
def test_the_lane_session_runs_one_thread_fewer_where_the_mode_asks(
    minilm_dir, reference, threads, mode, lane
):
    engine = Engine.from_pretrained(minilm_dir, intra_op_threads=threads)
    assert engine.lane_engine("off") is None
    with pytest.raises(ValueError, match="lane session mode must be one of"):
        engine.lane_engine("sometimes")
    lane_engine = engine.lane_engine(mode)
    if not lane:
        assert lane_engine is None
        return
    assert lane_engine.session.threads == lane and engine.session.threads == threads
    assert lane_engine.session is not engine.session and lane_engine.tokenizer is engine.tokenizer
    ids = [np.array(t, np.int64) for t in engine.tokenize(reference["texts"][:16])]
    np.testing.assert_allclose(lane_engine.forward(ids), engine.forward(ids), atol=1e-5)


def test_auto_opens_no_lane_session_for_a_large_graph(minilm_dir):
    """The lane session loads the weights once more: auto keeps that to small graphs."""
    engine = Engine.from_pretrained(minilm_dir, intra_op_threads=2)
    assert 80e6 < engine.session.graph_bytes < 100e6  # all-MiniLM-L6-v2's fp32 weights
    assert lane_threads(2, "auto", engine.session.graph_bytes) == 1
    assert lane_threads(2, "auto", LANE_AUTO_MAX_BYTES + 1) == 0
    assert lane_threads(2, "on", LANE_AUTO_MAX_BYTES + 1) == 1
