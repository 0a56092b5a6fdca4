"""sentence-transformers' StaticEmbedding (model2vec / static-retrieval folders) through the
Engine, against sentence-transformers' own encode() on tiny random tables: real texts of mixed
lengths, the edge texts, both folder layouts, a Dense head, and no special tokens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from embedserve.engine import Engine
from embedserve.models.kind import EMBEDDER, model_kind

from tests.support.edge_texts import EDGE_TEXTS
from tests.support.tiny import quiet

COSINE = 0.99999
DIMENSION = 24


def build_static(
    tokenizer_dir: Path, out: Path, *, normalize: bool = True, dense: int | None = None
) -> tuple[Path, Any]:
    """A StaticEmbedding model with random rows, saved as sentence-transformers 6 saves it
    (the module at the folder's root); returns the folder and the loaded model."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, StaticEmbedding
    from tokenizers import Tokenizer

    torch.manual_seed(0)
    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    modules: list[Any] = [StaticEmbedding(tokenizer, embedding_dim=DIMENSION)]
    with torch.no_grad():
        modules[0].embedding.weight.normal_()
    if dense is not None:
        modules.append(Dense(DIMENSION, dense, activation_function=torch.nn.Tanh()))
    if normalize:
        modules.append(Normalize())
    st = SentenceTransformer(modules=modules, device="cpu")
    st.save(str(out))
    return out, st


def legacy_layout(src: Path, dst: Path) -> Path:
    """`src` as sentence-transformers 3.x saved static-retrieval-mrl-en-v1: the module in
    0_StaticEmbedding/ under its old class path."""
    shutil.copytree(src, dst)
    (dst / "0_StaticEmbedding").mkdir()
    for name in ("tokenizer.json", "model.safetensors"):
        (dst / name).rename(dst / "0_StaticEmbedding" / name)
    modules = json.loads((dst / "modules.json").read_text())
    modules[0].update(path="0_StaticEmbedding", type="sentence_transformers.models.StaticEmbedding")
    (dst / "modules.json").write_text(json.dumps(modules))
    return dst


def st_reference(st: Any, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """sentence-transformers' vectors, and the tokens StaticEmbedding averaged for each text."""
    vectors = quiet(st.encode, texts, batch_size=8, convert_to_numpy=True, show_progress_bar=False)
    tokenizer = st[0].tokenizer
    counts = [len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    return np.asarray(vectors, dtype=np.float32), np.asarray(counts)


@pytest.fixture(scope="module")
def texts(reference: dict) -> list[str]:
    """Real texts of every length, one past the MiniLM tokenizer's pinned 128-token cut, and
    the edge texts (empty and whitespace-only ones give an empty bag: a zero vector)."""
    longest = max(reference["texts"], key=len)
    return [*reference["texts"][:40], longest * 3, *EDGE_TEXTS]


@pytest.fixture(scope="module")
def folders(
    tmp_path_factory: pytest.TempPathFactory,
    minilm_tokenizer_dir: Path,
    xlmr_tokenizer_dir: Path,
    isolated_cache: None,
) -> dict[str, tuple[Path, Any]]:
    root = tmp_path_factory.mktemp("static")
    wordpiece = quiet(build_static, minilm_tokenizer_dir, root / "wordpiece")
    return {
        "wordpiece-normalized": wordpiece,
        "wordpiece-legacy-layout": (
            legacy_layout(wordpiece[0], root / "legacy"),
            wordpiece[1],
        ),
        "unigram-dense": quiet(
            build_static, xlmr_tokenizer_dir, root / "unigram", normalize=False, dense=12
        ),
    }


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize(
    "variant", ["wordpiece-normalized", "wordpiece-legacy-layout", "unigram-dense"]
)
def test_static_embedding_matches_sentence_transformers(
    variant: str, folders: dict, texts: list[str]
) -> None:
    folder, st = folders[variant]
    want, want_counts = st_reference(st, texts)
    got = Engine.from_pretrained(folder).embed(texts)
    assert got.token_counts.tolist() == want_counts.tolist()
    empty = want_counts == 0
    assert empty.any()
    # An empty bag is EmbeddingBag's zero row, normalized or not (and through Dense, tanh(b)).
    np.testing.assert_allclose(got.embeddings[empty], want[empty], atol=1e-6)
    cosines = _cosines(got.embeddings[~empty], want[~empty])
    worst = int(cosines.argmin())
    assert cosines.min() >= COSINE, f"text {worst}: {cosines.min()}"
    np.testing.assert_allclose(
        np.linalg.norm(got.embeddings, axis=1), np.linalg.norm(want, axis=1), rtol=1e-4, atol=1e-6
    )


def test_static_embedding_reads_its_tokenizer_as_saved(folders: dict, texts: list[str]) -> None:
    """No [CLS]/[SEP] (StaticEmbedding tokenizes with add_special_tokens=False), the 128-token
    truncation MiniLM's tokenizer.json pins, and no limit where the file pins none."""
    wordpiece = Engine.from_pretrained(folders["wordpiece-normalized"][0])
    unigram = Engine.from_pretrained(folders["unigram-dense"][0])
    # Served as an embedder too: a Dense after a StaticEmbedding, and no Pooling, is not ColBERT.
    assert {model_kind(folder) for folder, _ in folders.values()} == {EMBEDDER}
    ids = wordpiece.tokenize(["hello world"])[0]
    assert ids == [7592, 2088]
    assert wordpiece.model_info.max_tokens == 128
    assert max(wordpiece.embed(texts).token_counts) == 128
    assert unigram.model_info.dimension == 12
    assert max(unigram.embed(texts).token_counts) > 512
    assert wordpiece.model_info.pooling == "mean"


def test_static_embedding_refuses_int8(folders: dict) -> None:
    """Its graph has no matmul for int8 to speed up: the precision is refused by name."""
    folder, _ = folders["wordpiece-normalized"]
    with pytest.raises(ValueError, match="StaticEmbedding model has no int8"):
        Engine.from_pretrained(folder, precision="int8")


@pytest.mark.parametrize("export", [False, True])
def test_static_embedding_from_a_hub_repo(
    export: bool, folders: dict, texts: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A static-retrieval-style repo (the table in 0_StaticEmbedding/, with or without an ONNX
    export of StaticEmbedding's own (ids, offsets) signature beside it) downloads its table and
    is compiled, not run through the export."""
    from huggingface_hub.utils import close_session

    from tests.models.test_hub import point_hub_client_at
    from tests.support.fake_hub import FakeHub, folder_files

    folder, st = folders["wordpiece-legacy-layout"]
    files: dict[str, Path | bytes] = {**folder_files(folder)}
    if export:
        files["onnx/model.onnx"] = b"not the graph embedserve runs"
    close_session()
    try:
        with FakeHub() as hub:
            hub.add_repo("embedserve-test/static", files)
            point_hub_client_at(monkeypatch, hub.endpoint, tmp_path / "hf")
            engine = Engine.from_pretrained("embedserve-test/static")
    finally:
        close_session()
    want, _ = st_reference(st, texts[:8])
    assert _cosines(engine.embed(texts[:8]).embeddings, want).min() >= COSINE


def test_static_embedding_pools_in_graph(folders: dict, texts: list[str]) -> None:
    """The in-graph mean that CUDA runs (models/pooling_graph.py) over the static graph, run
    here on the CPU: the same vectors as the C++ mean, empty rows included."""
    import onnxruntime as ort
    from embedserve.models.graph import onnx_for
    from embedserve.planning import pad_batch

    folder, _ = folders["wordpiece-normalized"]
    engine = Engine.from_pretrained(folder)
    sequences = engine.prepare(texts).sequences
    ids, mask, _ = pad_batch(sequences)
    graph = onnx_for(folder, pooling="mean")
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    (pooled,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
    np.testing.assert_allclose(pooled, engine.forward(sequences), atol=1e-6)
