"""DeBERTa-v2/-v3 and T5 beyond the family matrix (test_families): edge texts against
sentence-transformers, DeBERTa's log buckets against transformers' own function, its
cross-encoder head against CrossEncoder, and T5's feed-forward variants and checkpoints."""

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
EDGE_FAMILIES = ["deberta-v3", "deberta-v2", "t5", "t5-v1.1"]


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
    root = tmp_path_factory.mktemp("encoders")
    return {
        name: tiny.quiet(tiny.build, RECIPES[name], minilm_tokenizer_dir, root / name)
        for name in EDGE_FAMILIES
    }


@pytest.mark.parametrize("family", EDGE_FAMILIES)
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


@pytest.mark.parametrize(
    ("proj", "act", "is_gated"),
    [("relu", "relu", False), ("gated-gelu", "gelu_new", True), ("gated-silu", "silu", True)],
)
def test_t5_feed_forward_kinds(proj: str, act: str, is_gated: bool, tmp_path: Path) -> None:
    """T5Config's reading of feed_forward_proj, "gated-gelu" meaning GELU-tanh included."""
    from embedserve.models.architectures.t5 import feed_forward_kind
    from embedserve.models.hf_config import HFConfig, UnsupportedArchitectureError
    from transformers import T5Config

    config = T5Config(feed_forward_proj=proj)
    assert (config.dense_act_fn, config.is_gated_act) == (act, is_gated)
    assert feed_forward_kind(HFConfig({"feed_forward_proj": proj}, tmp_path)) == (act, is_gated)
    with pytest.raises(UnsupportedArchitectureError, match="not valid"):
        feed_forward_kind(HFConfig({"feed_forward_proj": "double-gated-gelu"}, tmp_path))


def test_t5_model_checkpoint_compiles_its_encoder(
    folders: dict, reference: dict, tmp_path: Path
) -> None:
    """A whole T5Model (encoder and decoder, as t5-base ships) serves its encoder: the same
    vectors as the T5EncoderModel folder, decoder tensors ignored."""
    import json
    import shutil

    import torch
    import transformers

    folder, st = folders["t5"]
    copy = tmp_path / "t5-full"
    shutil.copytree(folder, copy)
    config = transformers.T5Config.from_pretrained(str(folder))
    config.architectures = ["T5Model"]
    full = transformers.T5Model(config)
    encoder = transformers.T5EncoderModel.from_pretrained(str(folder))
    with torch.no_grad():
        full.encoder.load_state_dict(encoder.encoder.state_dict())
    tiny.quiet(full.save_pretrained, str(copy))
    assert json.loads((copy / "config.json").read_text())["architectures"] == ["T5Model"]
    texts = reference["texts"][:12]
    want, _ = tiny.quiet(tiny.reference, st, texts)
    got = Engine.from_pretrained(copy).embed(texts).embeddings
    np.testing.assert_allclose(got, want, atol=2e-5)
