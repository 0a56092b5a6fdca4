"""BGE-M3's ColBERT head against FlagEmbedding's BGEM3FlagModel on tiny random XLM-R weights
saved in its layout (a transformers folder plus colbert_linear.pt and sparse_linear.pt)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from embedserve.bge_m3 import M3Colbert, has_colbert_head

from tests.support.cross_encoders import QUERIES
from tests.support.edge_texts import EDGE_TEXTS
from tests.support.tiny import quiet

with warnings.catch_warnings():  # FlagEmbedding imports deprecated paths of its dependencies
    warnings.simplefilter("ignore")
    import FlagEmbedding

MAX_LENGTH = 64
TEXTS = [*QUERIES, "license " * 100, *[t for t in EDGE_TEXTS if t.strip()]]


def build_bge_m3(out: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A random XLMRobertaModel with XLM-R's tokenizer and random BGE-M3 heads, as BGE-M3 ships."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from tests.support.tiny import _randomize

    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=250_002,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=MAX_LENGTH + 2,
        pad_token_id=1,
    )
    model = XLMRobertaModel(config)
    _randomize(model, seed, None)
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tokenizer_dir / name, out / name)
    gen = torch.Generator().manual_seed(seed + 1)
    colbert = torch.nn.Linear(32, 32)
    sparse = torch.nn.Linear(32, 1)
    with torch.no_grad():
        for layer in (colbert, sparse):
            for p in layer.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    torch.save(colbert.state_dict(), out / "colbert_linear.pt")
    torch.save(sparse.state_dict(), out / "sparse_linear.pt")
    return out


@pytest.fixture(scope="module")
def m3_dir(tmp_path_factory, xlmr_tokenizer_dir) -> Path:
    return build_bge_m3(tmp_path_factory.mktemp("bge-m3"), xlmr_tokenizer_dir)


def test_colbert_vectors_and_scores_match_flagembedding(m3_dir):
    assert has_colbert_head(m3_dir)
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
