"""An XLM-RoBERTa tokenizer (multilingual-e5-small's Unigram, 250,002 tokens) through embedserve:
special tokens <s>=0 … </s>=2, truncation, and token-array inputs, against transformers'
AutoTokenizer on the same folder (what sentence-transformers uses)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from embedserve.engine import Engine
from embedserve.errors import InvalidTokenError
from embedserve.tokenization import ModelTokenizer

MAX = 512
TEXTS = [
    "query: how much protein should a female eat",
    "passage: As a general guideline, the CDC's average requirement of protein for women ages 19 to 70 is 46 grams per day.",
    "Привет, мир! Как дела?",
    "東京は日本の首都です。",
    "مرحبا بالعالم",
    "emoji 🙂🚀 and code: def f(x): return x**2",
    "  leading and trailing spaces  ",
    "a",
    "",
]


@pytest.fixture(scope="module")
def xlmr_dir(xlmr_tokenizer_dir: Path) -> Path:
    return xlmr_tokenizer_dir


@pytest.fixture(scope="module")
def tokenizer(xlmr_dir: Path) -> ModelTokenizer:
    return ModelTokenizer(xlmr_dir / "tokenizer.json", MAX)


@pytest.fixture(scope="module")
def hf_tokenizer(xlmr_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(xlmr_dir))


@pytest.fixture(scope="module")
def texts(reference) -> list[str]:
    long = " ".join(reference["texts"][i] for i in range(40))  # far past 512 tokens
    return [*TEXTS, *reference["texts"][:40], long]


def test_special_tokens_and_vocabulary(tokenizer):
    assert tokenizer.prefix == [0] and tokenizer.suffix == [2]
    assert tokenizer.vocab_size == 250_002
    assert tokenizer.specials == 2


def test_ids_equal_transformers_with_truncation(tokenizer, hf_tokenizer, texts):
    content = tokenizer.content_ids(texts)
    ours = [
        tokenizer.model_sequence(i, ids, truncate=True, direction="right").tolist()
        for i, ids in enumerate(content)
    ]
    theirs = hf_tokenizer(texts, truncation=True, max_length=MAX)["input_ids"]
    assert ours == theirs
    assert max(len(ids) for ids in ours) == MAX
    assert all(ids[0] == 0 and ids[-1] == 2 for ids in ours)


def test_left_truncation_keeps_both_special_tokens(tokenizer, hf_tokenizer, texts):
    long = texts[-1]
    ids = tokenizer.content_ids([long])[0]
    left = tokenizer.model_sequence(0, ids, truncate=True, direction="left").tolist()
    hf_tokenizer.truncation_side = "left"
    try:
        theirs = hf_tokenizer([long], truncation=True, max_length=MAX)["input_ids"][0]
    finally:
        hf_tokenizer.truncation_side = "right"
    assert left == theirs
    assert left[0] == 0 and left[-1] == 2 and left[1:-1] == ids[-(MAX - 2) :]


def test_token_arrays_get_the_special_tokens_and_are_checked(minilm_dir, xlmr_dir, hf_tokenizer):
    # Any weights will do: prepare() only tokenizes; the XLM-R folder supplies the tokenizer.
    engine = Engine.from_pretrained(minilm_dir, tokenizer=xlmr_dir)
    assert engine.model_info.max_tokens == MAX
    arrays = [hf_tokenizer("Привет мир", add_special_tokens=False)["input_ids"], [250_001, 5, 6]]
    prepared = engine.prepare(arrays)
    assert [s.tolist() for s in prepared.sequences] == [[0, *arrays[0], 2], [0, 250_001, 5, 6, 2]]
    np.testing.assert_array_equal(prepared.token_counts, [len(arrays[0]) + 2, 5])
    # The same text as a string or as its token array: the same model input.
    assert engine.tokenize("Привет мир")[0] == prepared.sequences[0].tolist()
    with pytest.raises(InvalidTokenError, match=r"input\[1\].*250002.*0\.\.250001"):
        engine.prepare([[1, 2], [5, 250_002]])
