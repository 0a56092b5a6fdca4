from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import settings

DATA = Path(__file__).parent / "data"

# CI shares 2 cores with a whole server and model: a per-example deadline measures the machine,
# not the code, so it is off (each test still bounds its examples).
settings.register_profile("embedserve", deadline=None)
settings.load_profile("embedserve")


@pytest.fixture(scope="session")
def reference() -> dict:
    """sentence-transformers' own vectors for all-MiniLM-L6-v2 (see data/REFERENCE.md)."""
    ref = json.loads((DATA / "all-MiniLM-L6-v2.public.json").read_text())
    ref["normalized"] = np.asarray(ref["normalized"], dtype=np.float32)
    ref["unnormalized"] = np.asarray(ref["unnormalized"], dtype=np.float32)
    return ref


@pytest.fixture(scope="session")
def embedded() -> Callable[[Any, Sequence[str]], Any]:
    """`engine.embed(texts)`, computed once a session for each graph, runtime, precision and
    list of texts. Two engines that agree on all of them give the same vectors; test_mpnet and
    test_precision's fp32 floor both embed all-mpnet-base-v2's 200 reference texts with its fp32
    graph on ONNX Runtime's CPU provider (most of a minute on two cores, twice over)."""
    results: dict[tuple, Any] = {}

    def embed(engine: Any, texts: Sequence[str]) -> Any:
        info = engine.model_info
        key = (str(engine.session.path), info.provider, info.precision, info.pooling, tuple(texts))
        if key not in results:
            results[key] = engine.embed(list(texts))
        return results[key]

    return embed


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The unpacked all-MiniLM-L6-v2 model folder (safetensors + tokenizer + ST configs)."""
    override = os.environ.get("EMBEDSERVE_TEST_MODEL_DIR")
    if override:
        return Path(override)
    from embedserve.models import resolve_model_dir

    return resolve_model_dir("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def cross_encoder_dirs(tmp_path_factory, minilm_dir, reference) -> dict[str, tuple[Path, Path]]:
    """Tiny random cross-encoders: name → (folder embedserve loads, folder CrossEncoder loads)."""
    from .support import cross_encoders as ce

    root = tmp_path_factory.mktemp("cross-encoders")
    bert = ce.bert_cross_encoder(root / "bert", minilm_dir)
    bert3 = ce.bert_cross_encoder(root / "bert3", minilm_dir, num_labels=3, seed=3)
    xlmr = ce.xlm_roberta_cross_encoder(root / "xlmr", reference["texts"])
    xlmr_onnx = ce.export_onnx(xlmr, root / "xlmr-onnx")
    distilbert = ce.distilbert_cross_encoder(root / "distilbert", minilm_dir)
    mpnet = ce.mpnet_cross_encoder(root / "mpnet", reference["texts"])
    modernbert = ce.modernbert_cross_encoder(root / "modernbert", minilm_dir, pooling="mean")
    modernbert_cls = ce.modernbert_cross_encoder(
        root / "modernbert-cls", minilm_dir, pooling="cls", seed=5
    )
    folders = {
        "bert": bert,
        "bert3": bert3,
        "xlmr": xlmr,
        "distilbert": distilbert,
        "mpnet": mpnet,
        "modernbert": modernbert,
        "modernbert_cls": modernbert_cls,
    }
    return {**{name: (f, f) for name, f in folders.items()}, "xlmr_onnx": (xlmr_onnx, xlmr)}


@pytest.fixture(scope="session")
def st_quantize():
    """sentence-transformers' own `quantize_embeddings` with embedserve's fixed ranges: what
    every byte encoding (int8, uint8, binary, ubinary) must equal, byte for byte."""
    from embedserve.quantization import fixed_ranges
    from sentence_transformers import quantize_embeddings

    def quantize(vectors: np.ndarray, precision: str) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        return quantize_embeddings(vectors, precision, ranges=fixed_ranges(vectors.shape[1]))

    return quantize
