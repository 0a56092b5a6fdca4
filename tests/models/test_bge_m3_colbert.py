"""BGE-M3's ColBERT head against FlagEmbedding's BGEM3FlagModel on tiny random XLM-R weights
saved in its layout (a transformers folder plus colbert_linear.pt and sparse_linear.pt) with
XLM-R's own tokenizer (tests/support/bge_m3.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from embedserve.bge_m3 import COLBERT_HEAD, M3Colbert
from embedserve.errors import InputError
from embedserve.models.bge_m3 import heads

from tests.support.bge_m3 import tiny_bge_m3
from tests.support.cross_encoders import QUERIES
from tests.support.edge_texts import EDGE_TEXTS
from tests.support.tiny import quiet

with warnings.catch_warnings():  # FlagEmbedding imports deprecated paths of its dependencies
    warnings.simplefilter("ignore")
    import FlagEmbedding

MAX_LENGTH = 64
TEXTS = [*QUERIES, "license " * 100, *[t for t in EDGE_TEXTS if t.strip()]]


@pytest.fixture(scope="module")
def m3_dir(tmp_path_factory, xlmr_tokenizer_dir) -> Path:
    folder = tmp_path_factory.mktemp("bge-m3")
    return tiny_bge_m3(folder, [], max_length=MAX_LENGTH, seed=0, tokenizer_dir=xlmr_tokenizer_dir)


def test_colbert_vectors_and_scores_match_flagembedding(m3_dir):
    assert COLBERT_HEAD in heads(m3_dir)  # as the server finds it (server/registry.py)
    ours = M3Colbert.from_pretrained(m3_dir, max_length=MAX_LENGTH)
    ref = quiet(FlagEmbedding.BGEM3FlagModel, str(m3_dir), use_fp16=False, devices="cpu")
    out = quiet(
        ref.encode,
        TEXTS,
        max_length=MAX_LENGTH,
        return_dense=False,
        return_sparse=False,
        return_colbert_vecs=True,
    )
    theirs = out["colbert_vecs"]
    mine = ours.encode(TEXTS)
    for a, b in zip(mine, theirs, strict=True):
        assert a.shape == b.shape
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cos.min() >= 0.99999
    scores = ours.score(QUERIES[1], TEXTS[:5])
    expected = [float(ref.colbert_score(theirs[1], d)) for d in theirs[:5]]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_max_tokens_keeps_each_text_s_first_tokens_before_the_limit(m3_dir):
    """Cohere's max_tokens_per_doc on a MaxSim rerank: the cut comes first and counts as sent,
    so a text past the model's limit passes with truncate=False."""
    ours = M3Colbert.from_pretrained(m3_dir, max_length=MAX_LENGTH)
    texts = ["license " * 100, QUERIES[1]]
    tokenizer = ours.tokenizer
    part = ours.prepare(texts, truncate=False, max_tokens=5)
    for seq, ids in zip(part.sequences, tokenizer.content_ids(texts), strict=True):
        assert seq.tolist() == tokenizer.prefix + ids[:5] + tokenizer.suffix
    assert part.untruncated_tokens.tolist() == [5 + tokenizer.specials] * 2
    assert all(getattr(seq, "keep_states", False) for seq in part.sequences)


def test_bad_texts_are_input_errors_naming_them(m3_dir):
    """score(query, "abc") scored three one-character documents; None and token ids failed with
    a TypeError from the tokenizer."""
    from embedserve.errors import InputError

    ours = M3Colbert.from_pretrained(m3_dir, max_length=MAX_LENGTH)
    for query, documents, param in [
        ("q", "abc", "documents"),
        ("q", None, "documents"),
        ("q", ["a", None], "documents"),
        (None, ["a"], "query"),
    ]:
        with pytest.raises(InputError) as caught:
            ours.score(query, documents)
        assert caught.value.param == param
    for texts in (None, [101, 102], ["a", b"b"]):
        with pytest.raises(InputError) as caught:
            ours.encode(texts)
        assert caught.value.param == "texts"
    assert ours.score("q", ["a", "b"]).shape == (2,)


@pytest.mark.parametrize("bad", ["no", None])
def test_truncate_that_is_not_a_bool_is_an_input_error(m3_dir, bad):
    """Was taken for its truthiness: truncate="no" truncated, None refused a long text."""
    ours = M3Colbert.from_pretrained(m3_dir, max_length=MAX_LENGTH)
    for call in (
        lambda: ours.encode(["license " * 100], truncate=bad),
        lambda: ours.score("q", ["license " * 100], truncate=bad),
    ):
        with pytest.raises(InputError, match="truncate must be True or False, got ") as caught:
            call()
        assert caught.value.param == "truncate"
