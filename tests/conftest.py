from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def reference() -> dict:
    """sentence-transformers' own vectors for all-MiniLM-L6-v2 (see data/REFERENCE.md)."""
    ref = json.loads((DATA / "all-MiniLM-L6-v2.public.json").read_text())
    ref["normalized"] = np.asarray(ref["normalized"], dtype=np.float32)
    ref["unnormalized"] = np.asarray(ref["unnormalized"], dtype=np.float32)
    return ref


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
    from .cross_encoders import bert_cross_encoder, export_onnx, xlm_roberta_cross_encoder

    root = tmp_path_factory.mktemp("cross-encoders")
    bert = bert_cross_encoder(root / "bert", minilm_dir)
    bert3 = bert_cross_encoder(root / "bert3", minilm_dir, num_labels=3, seed=3)
    xlmr = xlm_roberta_cross_encoder(root / "xlmr", reference["texts"])
    xlmr_onnx = export_onnx(xlmr, root / "xlmr-onnx")
    return {"bert": (bert, bert), "bert3": (bert3, bert3), "xlmr_onnx": (xlmr_onnx, xlmr)}
