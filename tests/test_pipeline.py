"""`Pipeline.embed` (tokenization on threads ahead of the model) checks what `Engine.embed`
checks, at its own boundary, and gives its vectors."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from embedserve.engine import Engine
from embedserve.errors import InputError
from embedserve.pipeline import Pipeline


@pytest.fixture(scope="module")
def engine(minilm_dir) -> Engine:
    return Engine.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def pipeline(engine) -> Iterator[Pipeline]:
    pipeline = Pipeline(engine, tokenize_threads=2, in_flight=2, chunk_texts=2)
    yield pipeline
    pipeline.close()


def test_a_string_is_one_text(engine, pipeline):
    """list("abc") made three one-character texts."""
    got = pipeline.embed("a text")
    np.testing.assert_array_equal(got.embeddings, engine.embed("a text").embeddings)
    assert got.embeddings.shape == (1, 384)


@pytest.mark.parametrize(
    "texts, options, param",
    [
        (None, {}, "input"),
        ([1, 2], {}, "input"),
        (["a", None], {}, "input"),
        (["a"], {"truncation_direction": "up"}, "truncation_direction"),
        (["a"], {"normalize": "yes"}, "normalize"),
    ],
)
def test_bad_arguments_are_input_errors(pipeline, texts, options, param):
    """Not a TypeError from the tokenizer; an unknown direction was taken as "left"."""
    with pytest.raises(InputError) as caught:
        pipeline.embed(texts, **options)
    assert caught.value.param == param


def test_a_closed_pipeline_says_so_and_a_with_block_closes_it(engine):
    """After close(), embed raised concurrent.futures' "cannot schedule new futures after
    shutdown", which names no Pipeline; and a Pipeline was no context manager."""
    with Pipeline(engine, tokenize_threads=1, in_flight=1) as pipeline:
        got = pipeline.embed(["a text"])
    np.testing.assert_array_equal(got.embeddings, engine.embed(["a text"]).embeddings)
    with pytest.raises(RuntimeError, match="this Pipeline is closed"):
        pipeline.embed(["a text"])
    pipeline.close()  # a second close is harmless
