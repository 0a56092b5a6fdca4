"""Vectors and cross-encoder scores through the original XLM-R tokenizer.json (multilingual-e5's,
saved with transformers 4) equal sentence-transformers' on transformers 5, which rebuilds that
file's pipeline: a text or query ending in whitespace gets no trailing `▁` token there. Tiny
random XLM-R weights; the tokenizer files are copied in as saved, not re-saved."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from embedserve.engine import Engine
from embedserve.reranker import Reranker

from tests.support.cross_encoders import xlm_roberta_cross_encoder_over
from tests.support.edge_texts import EDGE_QUERIES, EDGE_TEXTS
from tests.support.tiny import Recipe, build, quiet, reference

COSINE = 0.9999
SCORE_ATOL = 1e-4

RECIPE = Recipe(
    "xlm-roberta-mean",
    "xlm-roberta",
    {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 48,
        "max_position_embeddings": 66,
        "vocab_size": 250_002,
        "type_vocab_size": 1,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    },
    pooling="mean",
    normalize=True,
    max_seq_length=64,
    tokenizer="xlmr",
)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def embedder(tmp_path_factory, xlmr_tokenizer_dir: Path, isolated_cache: None) -> Path:
    folder, _ = quiet(build, RECIPE, xlmr_tokenizer_dir, tmp_path_factory.mktemp("xlmr"))
    # sentence-transformers saved transformers 5's pipeline; put the file as published back.
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(xlmr_tokenizer_dir / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory, xlmr_tokenizer_dir: Path, isolated_cache: None) -> Path:
    return quiet(
        xlm_roberta_cross_encoder_over, tmp_path_factory.mktemp("xlmr-ce"), xlmr_tokenizer_dir
    )


def test_vectors_match_sentence_transformers(embedder: Path) -> None:
    from sentence_transformers import SentenceTransformer

    st = quiet(SentenceTransformer, str(embedder), device="cpu")
    want, counts = quiet(reference, st, EDGE_TEXTS)
    got = Engine.from_pretrained(embedder).embed(EDGE_TEXTS)
    assert got.token_counts.tolist() == counts.tolist()
    cosines = _cosines(got.embeddings, want)
    worst = int(cosines.argmin())
    assert cosines.min() >= COSINE, (EDGE_TEXTS[worst], cosines.min())
    # The file as saved gives trailing whitespace a token of its own: other vectors.
    as_saved = Engine.from_pretrained(embedder, tokenizer_mode="as-saved").embed(EDGE_TEXTS)
    assert _cosines(as_saved.embeddings, want).min() < COSINE


def test_scores_match_cross_encoder(cross_encoder: Path) -> None:
    import torch
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(1)
    ce = quiet(CrossEncoder, str(cross_encoder), device="cpu")
    pairs = [(query, doc) for query in EDGE_QUERIES for doc in EDGE_TEXTS]
    want = ce.predict(pairs, batch_size=16)
    got = Reranker.from_pretrained(cross_encoder).score(pairs)
    np.testing.assert_allclose(got, want, atol=SCORE_ATOL, rtol=0)
    assert np.std(want) > 0.01  # the random head separates pairs
    as_saved = Reranker.from_pretrained(cross_encoder, tokenizer_mode="as-saved").score(pairs)
    assert np.abs(as_saved - want).max() > 100 * SCORE_ATOL
