"""The library's `Engine` called as a careless script would: arguments of the wrong type must be
an InputError naming the argument (or the input's index), never a silent wrong answer."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from embedserve.engine import Engine
from embedserve.errors import InputError
from embedserve.pipeline import Pipeline


@pytest.fixture(scope="module")
def engine(minilm_dir) -> Engine:
    return Engine.from_pretrained(minilm_dir)


def test_similarity_scores_every_sentence_of_a_generator(engine):
    """The generator was read up by the argument check, so the model saw only the source
    sentence and the call answered an empty array."""
    sentences = ["a cat", "stock markets"]
    want = engine.similarity("a cat", sentences)
    got = engine.similarity("a cat", (s for s in sentences))
    assert got.shape == (2,)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bad", ["no", "false", None, 0, 1, [False], np.array([True])])
def test_truncate_that_is_not_a_bool_is_an_input_error(engine, bad):
    """Was taken for its truthiness: "no" truncated, None refused a long text as too long."""
    long_text = "word " * 300
    pipeline = Pipeline(engine, tokenize_threads=1, in_flight=1)
    calls = {
        "pipeline": lambda: pipeline.embed([long_text], truncate=bad),
        "embed": lambda: engine.embed([long_text], truncate=bad),
        "tokenize": lambda: engine.tokenize([long_text], truncate=bad),
        "embed_all": lambda: engine.embed_all([long_text], truncate=bad),
        "similarity": lambda: engine.similarity("a", [long_text], truncate=bad),
    }
    try:
        for name, call in calls.items():
            with pytest.raises(InputError, match="truncate must be True or False, got ") as caught:
                call()
            assert caught.value.param == "truncate", name
    finally:
        pipeline.close()


def test_numpy_bool_truncate_is_taken(engine):
    long_text = "word " * 300
    want = engine.embed([long_text], truncate=True).embeddings
    np.testing.assert_array_equal(engine.embed([long_text], truncate=np.True_).embeddings, want)


@pytest.mark.parametrize("bad", [["query"], {"query": ""}, b"query", 3])
def test_prompt_name_that_is_not_a_string_is_an_input_error(engine, bad):
    """A list or dict was a bare `TypeError: unhashable type` from the prompt lookup."""
    for call in (
        lambda: engine.embed(["a"], prompt_name=bad),
        lambda: engine.embed([[101, 102]], prompt_name=bad),
        lambda: engine.similarity("a", ["b"], prompt_name=bad),
    ):
        with pytest.raises(
            InputError, match="prompt_name must be a string or None, got "
        ) as caught:
            call()
        assert caught.value.param == "prompt_name"


@pytest.mark.parametrize("raw", [bytearray(b"ab"), memoryview(b"ab")])
def test_bytes_like_inputs_are_refused_not_read_as_token_ids(engine, raw):
    """bytes was refused, but a bytearray or memoryview (an array of byte values) was embedded
    as the token ids 97, 98: a vector for no text the caller had."""
    with pytest.raises(InputError, match=f"not {type(raw).__name__}"):
        engine.embed(raw)
    with pytest.raises(InputError, match=r"input\[1\] is a " + type(raw).__name__) as caught:
        engine.embed([[101, 102], raw])
    assert caught.value.index == 1
    with pytest.raises(InputError, match=r"input\[0\] is a " + type(raw).__name__):
        engine.embed([raw])
    with pytest.raises(
        InputError, match=f"texts must be a string or an array of strings, not {type(raw).__name__}"
    ):
        engine.tokenize(raw)


@pytest.mark.parametrize("bad", [np.array(["left", "right"]), np.array(["left"]), None, "LEFT"])
def test_truncation_direction_that_is_not_a_direction_is_an_input_error(engine, bad):
    """An array of two was the bare ValueError "The truth value of an array ... is ambiguous"
    from the `in` test, naming no argument."""
    for call in (
        lambda: engine.embed(["a"], truncation_direction=bad),
        lambda: engine.tokenize(["a"], truncation_direction=bad),
    ):
        with pytest.raises(InputError, match="truncation_direction must be one of") as caught:
            call()
        assert caught.value.param == "truncation_direction"


@pytest.mark.parametrize("spec", [None, 3, ["all-MiniLM-L6-v2"]])
def test_a_model_spec_that_is_not_a_name_or_a_path_is_a_type_error_naming_it(spec):
    """Was "expected str, bytes or os.PathLike object, not NoneType" from pathlib, deep in the
    model lookup, naming no argument."""
    with pytest.raises(TypeError, match="the model must be a folder, a catalog name or a hub"):
        Engine.from_pretrained(spec)  # type: ignore[arg-type]


def test_options_that_are_not_load_options_are_a_type_error_naming_them(minilm_dir):
    """A dict was an AttributeError ('dict' object has no attribute 'max_batch_tokens')."""
    with pytest.raises(TypeError, match="options must be a LoadOptions, not dict"):
        Engine.from_pretrained(minilm_dir, options={"precision": "int8"})  # type: ignore[arg-type]


@pytest.mark.parametrize("max_length", [1, 2])
def test_a_max_length_that_leaves_no_room_for_text_is_refused(minilm_dir, max_length):
    """max_length=1 loaded and then embedded [CLS] [SEP], two tokens past its own limit;
    max_length=2 gave every text the one vector of [CLS] [SEP]."""
    with pytest.raises(ValueError, match=f"max_length {max_length} leaves no room for text"):
        Engine.from_pretrained(minilm_dir, max_length=max_length)
    assert Engine.from_pretrained(minilm_dir, max_length=3).embed("a b").token_counts[0] == 3


def test_pickling_an_engine_says_to_load_one_per_process(engine):
    """Was "cannot pickle 'onnxruntime.capi.onnxruntime_pybind11_state.InferenceSession'
    object", which says nothing of what to do (a multiprocessing pool's usual first error)."""
    for dump in (pickle.dumps, copy.deepcopy):
        with pytest.raises(TypeError, match=r"an Engine cannot be pickled.*from_pretrained"):
            dump(engine)
    # A shallow copy still shares the session: the lane and bulk engines are made that way.
    other = copy.copy(engine)
    assert other.session is engine.session
    np.testing.assert_array_equal(other.embed("a").embeddings, engine.embed("a").embeddings)
