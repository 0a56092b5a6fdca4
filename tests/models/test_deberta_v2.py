"""DeBERTa-v2/-v3 beyond the family matrix (test_families): the log buckets against
transformers' own function, edge texts, and the cross-encoder head against CrossEncoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from embedserve.engine import Engine
from embedserve.models.architectures.deberta_v2 import log_bucket
from embedserve.reranker import Reranker

from tests.models.test_families import COSINE, RECIPES
from tests.support import tiny
from tests.support.cross_encoders import QUERIES, deberta_v2_cross_encoder
from tests.support.edge_texts import EDGE_QUERIES, EDGE_TEXTS

SCORE_ATOL = 1e-4
MAX_LENGTH = 128


@pytest.mark.parametrize(("buckets", "max_position"), [(8, 64), (256, 512), (16, 40)])
def test_log_buckets_match_transformers(buckets: int, max_position: int) -> None:
    import torch
    from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

    distances = np.arange(-(2 * max_position), 2 * max_position, dtype=np.int64)
    want = make_log_bucket_position(torch.from_numpy(distances), buckets, max_position)
    np.testing.assert_array_equal(log_bucket(distances, buckets, max_position), want.numpy())


@pytest.fixture(scope="module")
def folders(
    tmp_path_factory: pytest.TempPathFactory, minilm_tokenizer_dir: Path, isolated_cache: None
) -> dict[str, tuple[Path, object]]:
    root = tmp_path_factory.mktemp("deberta")
    return {
        name: tiny.quiet(tiny.build, RECIPES[name], minilm_tokenizer_dir, root / name)
        for name in ("deberta-v3", "deberta-v2")
    }


@pytest.mark.parametrize("family", ["deberta-v3", "deberta-v2"])
def test_edge_texts_match_sentence_transformers(
    family: str, folders: dict, reference: dict
) -> None:
    """Whitespace, Unicode and script edge cases, batched with a text past the limit."""
    folder, st = folders[family]
    texts = [*EDGE_TEXTS, max(reference["texts"], key=len)]
    want, counts = tiny.quiet(tiny.reference, st, texts)
    got = Engine.from_pretrained(folder).embed(texts)
    assert got.token_counts.tolist() == counts.tolist()
    assert counts.max() == RECIPES[family].max_seq_length
    a, b = got.embeddings.astype(np.float64), want.astype(np.float64)
    cosines = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosines.min() >= COSINE, texts[int(cosines.argmin())]


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    return tiny.quiet(deberta_v2_cross_encoder, tmp_path_factory.mktemp("deberta-ce"), minilm_dir)


def test_cross_encoder_scores_match(cross_encoder_dir: Path, reference: dict) -> None:
    """DebertaV2ForSequenceClassification's ContextPooler head: sigmoid scores and raw logits
    within 1e-4 of CrossEncoder.predict, on pairs of mixed lengths (several cut at 128 tokens)
    and edge-text queries and documents."""
    import torch
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(1)
    documents = [*dict.fromkeys(reference["texts"][::4]), *EDGE_TEXTS]
    ce = tiny.quiet(CrossEncoder, str(cross_encoder_dir), device="cpu")
    reranker = Reranker.from_pretrained(cross_encoder_dir, max_batch_tokens=512)
    for query in [*QUERIES, *EDGE_QUERIES]:
        pairs = [(query, doc) for doc in documents]
        expected = tiny.quiet(ce.predict, pairs, batch_size=16)
        np.testing.assert_allclose(reranker.score(pairs), expected, atol=SCORE_ATOL, rtol=0)
        raw = tiny.quiet(ce.predict, pairs, batch_size=16, activation_fn=torch.nn.Identity())
        got = reranker.score(pairs, raw_scores=True)
        np.testing.assert_allclose(got, raw, atol=SCORE_ATOL, rtol=0)
    assert np.std(got) > 0.01  # the random head separates documents: the order is a real test
