"""ColBERT in PyLate's layout against pylate.models.ColBERT.encode, and MaxSim against
pylate.scores.colbert_scores, on tiny random BERT weights."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from embedserve.errors import InputError, InputTooLongError
from embedserve.late_interaction import ColBERT, maxsim
from embedserve.models.kind import LATE_INTERACTION, model_kind
from embedserve.precision import INT8_MIN_SPEEDUP, get_precision
from embedserve.runtime import int8_speed

from tests.support.colbert import build_colbert, reference
from tests.support.cross_encoders import QUERIES
from tests.support.edge_texts import EDGE_TEXTS
from tests.support.tiny import quiet

with warnings.catch_warnings():  # pylate imports sentence-transformers' deprecated paths
    warnings.simplefilter("ignore")
    # Not in the test extra: every release pins an older sentence-transformers, so the test
    # command installs it with --no-deps (its other imports come with the test extra).
    import pylate.scores as pylate_scores
    import torch

LONG = "the library may be distributed under the terms of this license " * 20
TEXTS = [*QUERIES, LONG, "Punctuation!!! (lots) of it: yes; no? ... ok.", *EDGE_TEXTS]


@pytest.fixture(
    scope="module",
    params=[("bert", False), ("bert", True), ("modernbert", False)],
    ids=["bert-masked-expansion", "bert-attended-expansion", "modernbert"],
)
def colbert_dir(request, tmp_path_factory, minilm_dir, isolated_cache) -> Path:
    architecture, attend = request.param
    out = tmp_path_factory.mktemp("colbert")
    return build_colbert(
        out, minilm_dir, attend_to_expansion_tokens=attend, architecture=architecture, seed=1
    )


def _cosines(ours: list[np.ndarray], theirs: list) -> float:
    worst = 1.0
    for a, b in zip(ours, theirs, strict=True):
        b = np.asarray(b, dtype=np.float32)
        assert a.shape == b.shape
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        worst = min(worst, float(cos.min()))
    return worst


@pytest.mark.parametrize("is_query", [True, False], ids=["query", "document"])
def test_token_vectors_match_pylate(colbert_dir, is_query):
    ours = ColBERT.from_pretrained(colbert_dir).encode(TEXTS, is_query=is_query)
    ref = reference(colbert_dir)
    theirs = quiet(ref.encode, TEXTS, is_query=is_query, show_progress_bar=False)
    assert _cosines(ours, theirs) >= 0.99999
    if is_query:  # expanded to query_length with [MASK]
        assert {len(v) for v in ours} == {32}
    else:  # cut at document_length, punctuation gone
        assert max(len(v) for v in ours) <= 64
        assert len(ours[4]) < len(ref.tokenize([TEXTS[4]], is_query=False)["input_ids"][0])
    for v in ours:
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)


def test_maxsim_and_rank_match_pylate(colbert_dir):
    model = ColBERT.from_pretrained(colbert_dir)
    ref = reference(colbert_dir)
    query, documents = QUERIES[1], TEXTS[:6]
    q = quiet(ref.encode, [query], is_query=True, show_progress_bar=False)
    d = quiet(ref.encode, documents, is_query=False, show_progress_bar=False)
    # Documents of different lengths: padded, with pylate's own mask saying which rows are real.
    longest = max(len(x) for x in d)
    padded = np.zeros((len(d), longest, d[0].shape[1]), dtype=np.float32)
    real = np.zeros((len(d), longest), dtype=np.float32)
    for i, x in enumerate(d):
        padded[i, : len(x)], real[i, : len(x)] = x, 1
    expected = pylate_scores.colbert_scores(
        np.asarray(q), padded, documents_mask=torch.from_numpy(real)
    )[0].numpy()
    ours = model.score(query, documents)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
    ranked = model.rank(query, documents, top_n=3)
    assert [r.index for r in ranked] == list(np.argsort(-expected, kind="stable")[:3])
    assert maxsim(model.encode(query, is_query=True)[0], []).shape == (0,)


def test_kind_and_limits(colbert_dir):
    assert model_kind(colbert_dir) == LATE_INTERACTION
    model = ColBERT.from_pretrained(colbert_dir)
    assert model.model_info.dimension == 16
    with pytest.raises(InputTooLongError):
        model.encode([LONG], is_query=False, truncate=False)


def test_lengths_past_the_position_table_are_capped_at_it(tmp_path, minilm_dir, isolated_cache):
    """A folder whose query_length and document_length pass its 64 positions: PyLate fails on a
    document that long; here both are cut at 64, giving PyLate's vectors for a folder saying 64."""
    import json
    import shutil

    folder = build_colbert(
        tmp_path / "long",
        minilm_dir,
        query_length=80,
        document_length=100,
        shape={"max_position_embeddings": 64},
    )
    model = ColBERT.from_pretrained(folder)
    assert (model.config.query_length, model.config.document_length) == (64, 64)
    capped = Path(shutil.copytree(folder, tmp_path / "capped"))
    path = capped / "config_sentence_transformers.json"
    path.write_text(
        json.dumps({**json.loads(path.read_text()), "query_length": 64, "document_length": 64})
    )
    ref = reference(capped)
    for is_query in (True, False):
        ours = model.encode(TEXTS, is_query=is_query)
        theirs = quiet(ref.encode, TEXTS, is_query=is_query, show_progress_bar=False)
        assert _cosines(ours, theirs) >= 0.99999
        assert max(len(v) for v in ours) == 64
    with pytest.raises(InputTooLongError, match="limit of 64"):
        model.encode([LONG], is_query=False, truncate=False)


def test_a_default_prompt_is_refused_not_ignored(colbert_dir, tmp_path):
    """PyLate puts the default prompt before every text; we have no prompts, so such a folder
    is refused (an empty prompt, or prompts without a default, change nothing and load)."""
    import json
    import shutil

    from embedserve.models.colbert_config import load_colbert_config
    from embedserve.models.st_modules import ModelConfigError

    folder = Path(shutil.copytree(colbert_dir, tmp_path / "prompted"))
    path = folder / "config_sentence_transformers.json"
    config = json.loads(path.read_text())
    for prompts, default in (({"query": "query: "}, None), ({"query": ""}, "query")):
        path.write_text(json.dumps({**config, "prompts": prompts, "default_prompt_name": default}))
        load_colbert_config(folder)
    prompted = {**config, "prompts": {"query": "query: "}, "default_prompt_name": "query"}
    path.write_text(json.dumps(prompted))
    with pytest.raises(ModelConfigError, match="default_prompt_name 'query' puts 'query: '"):
        load_colbert_config(folder)


def test_int8_stays_close_to_fp32(colbert_dir):
    # PyLate's stack (Transformer, Dense) is no embedder's: int8 calibrates at the document
    # length its own config gives. The bounds are on token vectors, which no pooling averages:
    # their mean cosine holds the int8 precision's floor, the worst token 0.95 (seen: 0.965 on
    # the ModernBERT, 0.98 with MiniLM's real weights under the same Dense). A MaxSim score
    # over a query's 32 tokens moves at most 0.05 a token (seen: 0.026), of a token's range 2.
    fp32 = ColBERT.from_pretrained(colbert_dir)
    int8 = ColBERT.from_pretrained(colbert_dir, precision="int8")
    assert int8.model_info.precision == "int8"
    assert int8.session.path != fp32.session.path
    for is_query in (True, False):
        ours = np.concatenate(int8.encode(TEXTS, is_query=is_query))
        exact = np.concatenate(fp32.encode(TEXTS, is_query=is_query))
        cos = (ours * exact).sum(1)  # both are normalized
        assert cos.mean() >= get_precision("int8").mean_cosine and cos.min() >= 0.95, cos.min()
    for query in QUERIES:
        moved = np.abs(int8.score(query, TEXTS) - fp32.score(query, TEXTS)) / 32
        assert moved.max() <= 0.05, moved.max()


def test_auto_runs_int8_where_this_cpu_would(colbert_dir, monkeypatch):
    monkeypatch.setattr(int8_speed, "int8_speedup", lambda: INT8_MIN_SPEEDUP)
    assert ColBERT.from_pretrained(colbert_dir, precision="auto").model_info.precision == "int8"


def test_embed_all_matches_sentence_transformers_token_embeddings(minilm_dir):
    from embedserve.engine import Engine
    from sentence_transformers import SentenceTransformer

    texts = [*QUERIES, LONG, *[t for t in EDGE_TEXTS if t.strip()]]
    ours = Engine.from_pretrained(minilm_dir).embed_all(texts)
    st = quiet(SentenceTransformer, str(minilm_dir), device="cpu")
    theirs = quiet(st.encode, texts, output_value="token_embeddings", show_progress_bar=False)
    assert _cosines(ours, [t.numpy() for t in theirs]) >= 0.99999
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-4)


@pytest.mark.parametrize("bad", ["no", None])
def test_yes_no_arguments_that_are_not_bools_are_input_errors(colbert_dir, bad):
    """Were taken for their truthiness: is_query="no" encoded a query, truncate="no" truncated
    and truncate=None refused a long text."""
    colbert = ColBERT.from_pretrained(colbert_dir)
    for param, call in (
        ("is_query", lambda: colbert.encode(["a"], is_query=bad)),
        ("truncate", lambda: colbert.encode([LONG], is_query=False, truncate=bad)),
        ("truncate", lambda: colbert.score("q", [LONG], truncate=bad)),
        ("truncate", lambda: colbert.rank("q", [LONG], truncate=bad)),
    ):
        with pytest.raises(InputError, match=f"{param} must be True or False, got ") as caught:
            call()
        assert caught.value.param == param
