"""Vectors and cross-encoder scores through the original XLM-R tokenizer.json (multilingual-e5's,
saved with transformers 4) equal sentence-transformers' on transformers 5, which rebuilds that
file's pipeline: a text or query ending in whitespace gets no trailing `▁` token there. Tiny
random XLM-R weights; the tokenizer files are copied in as saved, not re-saved.

sentence_bert_config.json's `do_lower_case` lowercases before the tokenizer's own normalizer, as
sentence-transformers' Transformer module does: on that XLM-R file, on all-MiniLM's files made
cased in tokenizer_config.json, and for a cross-encoder saved by sentence-transformers."""

from __future__ import annotations

import json
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


BERT_RECIPE = Recipe(
    "bert-mean",
    "bert",
    {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 48,
        "max_position_embeddings": 66,
        "vocab_size": 30_522,
    },
    pooling="mean",
    normalize=True,
    max_seq_length=64,
)

# Capitals in several scripts, title-case digraphs and letters whose lower case is longer.
LOWERCASE_TEXTS = [
    *EDGE_TEXTS,
    "Hello World",
    "The Quick Brown Fox",
    "İstanbul, ΣΊΣΥΦΟΣ, Straße and ẞ",
    "ǅemal, ǈubljana, ǋ and Ǳ",
    "ÀÉÎÕÜ Ǻ ĲSSEL",
    "ПРИВЕТ Мир, ԱՐԵՎ, ႠႡႢ",
    "ＦＵＬＬＷＩＤＴＨ ＣＡＰＳ",
]


def _lower_cased(folder: Path, out: Path) -> Path:
    """A copy of `folder` whose sentence_bert_config.json says do_lower_case."""
    shutil.copytree(folder, out)
    path = out / "sentence_bert_config.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**config, "do_lower_case": True}))
    return out


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


@pytest.fixture(scope="module")
def lower_cased(embedder: Path, tmp_path_factory, minilm_dir: Path) -> dict[str, Path]:
    """name → a folder lowercased by sentence_bert_config.json alone: the XLM-R embedder (a cased
    vocabulary), and a tiny BERT over all-MiniLM's files as saved but with tokenizer_config.json's
    do_lower_case false (its file's BertNormalizer lowercases; transformers 5 rebuilds it cased)."""
    root = tmp_path_factory.mktemp("lower-cased")
    bert, _ = quiet(build, BERT_RECIPE, minilm_dir, root / "bert-build")
    for name in ("tokenizer.json", "vocab.txt", "special_tokens_map.json"):
        if (minilm_dir / name).exists():
            shutil.copyfile(minilm_dir / name, bert / name)
    config = json.loads((minilm_dir / "tokenizer_config.json").read_text())
    (bert / "tokenizer_config.json").write_text(json.dumps({**config, "do_lower_case": False}))
    return {
        "bert-cased": _lower_cased(bert, root / "bert"),
        "xlm-roberta": _lower_cased(embedder, root / "xlm-roberta"),
    }


@pytest.mark.parametrize("name", ["bert-cased", "xlm-roberta"])
def test_do_lower_case_lowercases_as_sentence_transformers(
    name: str, lower_cased: dict[str, Path]
) -> None:
    from sentence_transformers import SentenceTransformer

    folder = lower_cased[name]
    st = quiet(SentenceTransformer, str(folder), device="cpu")
    want, counts = quiet(reference, st, LOWERCASE_TEXTS)
    features = quiet(st.tokenize, LOWERCASE_TEXTS)
    want_ids = [
        ids[mask.bool()].tolist()
        for ids, mask in zip(features["input_ids"], features["attention_mask"], strict=True)
    ]
    engine = Engine.from_pretrained(folder)
    tokenizer = engine.tokenizer
    got_ids = [
        tokenizer.model_sequence(i, ids, truncate=True, direction="right").tolist()
        for i, ids in enumerate(tokenizer.content_ids(LOWERCASE_TEXTS))
    ]
    assert got_ids == want_ids
    got = engine.embed(LOWERCASE_TEXTS)
    assert got.token_counts.tolist() == counts.tolist()
    cosines = _cosines(got.embeddings, want)
    assert cosines.min() >= COSINE, (LOWERCASE_TEXTS[int(cosines.argmin())], cosines.min())


def test_do_lower_case_lowercases_cross_encoder_pairs(cross_encoder: Path, tmp_path: Path) -> None:
    """A cross-encoder saved by sentence-transformers (modules.json, sentence_bert_config.json),
    its tokenizer files put back as published, then told to lowercase."""
    import torch
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(1)
    quiet(CrossEncoder, str(cross_encoder), device="cpu").save(str(tmp_path / "saved"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(cross_encoder / name, tmp_path / "saved" / name)
    folder = _lower_cased(tmp_path / "saved", tmp_path / "lower")
    ce = quiet(CrossEncoder, str(folder), device="cpu")
    pairs = [(query, doc) for query in ("Protein", "PROTEIN intake") for doc in LOWERCASE_TEXTS]
    want = ce.predict(pairs, batch_size=16)
    got = Reranker.from_pretrained(folder).score(pairs)
    np.testing.assert_allclose(got, want, atol=SCORE_ATOL, rtol=0)
    cased = quiet(CrossEncoder, str(tmp_path / "saved"), device="cpu").predict(pairs)
    assert np.abs(cased - want).max() > 100 * SCORE_ATOL  # the flag changes the scores


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
