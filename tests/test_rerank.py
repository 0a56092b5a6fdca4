"""The Reranker against sentence-transformers' CrossEncoder on tiny random-weight cross-encoders.

Real query/document pairs (license paragraphs of mixed lengths, several past the 128-token limit,
and a query long enough to be cut itself) through cross-encoders compiled from safetensors by the
layer library (BERT with a 1-logit and a 3-label head, XLM-RoBERTa, DistilBERT, MPNet, ModernBERT with
mean and CLS pooling) and an XLM-RoBERTa exported to ONNX by torch.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from embedserve.errors import InputError
from embedserve.models.kind import EMBEDDER, RERANKER, model_kind
from embedserve.pairs import PairTooLongError, longest_first
from embedserve.reranker import Reranker
from hypothesis import given, settings
from hypothesis import strategies as st

from .support.cross_encoders import QUERIES

SCORE_ATOL = 1e-4
MAX_LENGTH = 128


@pytest.fixture(scope="module")
def documents(reference) -> list[str]:
    # Every 4th text: short paragraphs, long ones, and the 12-paragraph texts past any limit.
    # Without repeats: two equal documents tie, and ties are no test of the order.
    texts = list(dict.fromkeys(reference["texts"][::4]))
    assert max(reference["tokens_untruncated"][::4]) > 2 * MAX_LENGTH
    return texts


def _cross_encoder(folder: Path):
    import torch
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(1)  # the machine is shared; the reference need not be fast
    return CrossEncoder(str(folder), device="cpu")


@pytest.mark.parametrize(
    "which",
    ["bert", "xlmr", "xlmr_onnx", "distilbert", "mpnet", "modernbert", "modernbert_cls"],
)
def test_scores_match_cross_encoder(which, cross_encoder_dirs, documents):
    import torch

    folder, reference_folder = cross_encoder_dirs[which]
    reranker = Reranker.from_pretrained(folder, max_batch_tokens=512)
    ce = _cross_encoder(reference_folder)
    for query in QUERIES:
        pairs = [(query, doc) for doc in documents]
        expected = ce.predict(pairs, batch_size=16)  # sigmoid, CrossEncoder's 1-label default
        got = reranker.score(pairs)
        np.testing.assert_allclose(got, expected, atol=SCORE_ATOL, rtol=0)
        raw = ce.predict(pairs, batch_size=16, activation_fn=torch.nn.Identity())
        np.testing.assert_allclose(
            reranker.score(pairs, raw_scores=True), raw, atol=SCORE_ATOL, rtol=0
        )
        ranked = reranker.rank(query, documents, top_n=10)
        want = ce.rank(query, documents, top_k=10, batch_size=16)
        assert [r.index for r in ranked] == [w["corpus_id"] for w in want]
        assert [r.document for r in ranked] == [documents[w["corpus_id"]] for w in want]
        np.testing.assert_allclose(
            [r.score for r in ranked], [w["score"] for w in want], atol=SCORE_ATOL, rtol=0
        )
    assert np.std(got) > 0.01  # the random head separates documents: the order is a real test


def test_multi_label_head(cross_encoder_dirs, documents):
    folder, _ = cross_encoder_dirs["bert3"]
    reranker = Reranker.from_pretrained(folder)
    assert reranker.model_info.num_labels == 3
    ce = _cross_encoder(folder)
    pairs = [(QUERIES[1], doc) for doc in documents]
    raw = ce.predict(pairs, batch_size=16)  # CrossEncoder's multi-label default: the logits
    np.testing.assert_allclose(reranker.score(pairs, raw_scores=True), raw, atol=SCORE_ATOL, rtol=0)
    probs = ce.predict(pairs, batch_size=16, apply_softmax=True)
    np.testing.assert_allclose(reranker.score(pairs), probs, atol=SCORE_ATOL, rtol=0)
    ranked = reranker.rank(QUERIES[1], documents)
    assert [r.index for r in ranked] == np.argsort(-probs[:, -1], kind="stable").tolist()


@pytest.mark.parametrize("which", ["bert", "xlmr_onnx"])
@pytest.mark.parametrize("max_length", [MAX_LENGTH, 37])
def test_pair_tokens_match_transformers(which, max_length, cross_encoder_dirs, documents):
    """ids and token types equal the fast tokenizer's with truncation='longest_first'."""
    from transformers import AutoTokenizer

    folder, _ = cross_encoder_dirs[which]
    reranker = Reranker.from_pretrained(folder, max_length=max_length)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    for query in [*QUERIES, documents[-1]]:
        prepared = reranker.prepare(query, documents)
        want = tokenizer(
            [query] * len(documents), documents, truncation="longest_first", max_length=max_length
        )
        assert [p.ids.tolist() for p in prepared.pairs] == want["input_ids"]
        types = want.get("token_type_ids") or [[0] * len(ids) for ids in want["input_ids"]]
        assert [p.types.tolist() for p in prepared.pairs] == types
        full = tokenizer([query] * len(documents), documents)["input_ids"]
        assert prepared.untruncated_tokens.tolist() == [len(ids) for ids in full]
    assert max(prepared.untruncated_tokens) > max_length >= max(prepared.token_counts)


@pytest.fixture(scope="module")
def one_token_per_word():
    """A tokenizer where each word is one token and a pair gets no special tokens."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit

    tokenizer = Tokenizer(WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = WhitespaceSplit()
    return tokenizer


@settings(deadline=None)  # a shared 2-core machine; each case is microseconds when idle
@given(st.integers(1, 400), st.integers(1, 400), st.integers(1, 300))
def test_longest_first_is_the_tokenizers_rule(one_token_per_word, first, second, room):
    """Against `tokenizers` itself (its rule gives the odd token to the second text, where
    transformers' slow tokenizers give it to the first)."""
    one_token_per_word.enable_truncation(room, strategy="longest_first")
    ids = one_token_per_word.encode(" ".join("a" * first), " ".join("b" * second)).ids
    assert longest_first(first, second, room) == (ids.count(0), ids.count(1))


def test_truncate_false_names_the_document(cross_encoder_dirs, documents):
    reranker = Reranker.from_pretrained(cross_encoder_dirs["bert"][0])
    lengths = reranker.prepare(QUERIES[0], documents).untruncated_tokens
    first_long = int(np.argmax(lengths > MAX_LENGTH))
    with pytest.raises(PairTooLongError) as info:
        reranker.rank(QUERIES[0], documents, truncate=False)
    assert info.value.index == first_long
    assert f"documents[{first_long}]" in str(info.value) and str(MAX_LENGTH) in str(info.value)
    short = [d for d, n in zip(documents, lengths) if n <= MAX_LENGTH]
    assert len(reranker.rank(QUERIES[0], short, truncate=False)) == len(short)


def test_max_tokens_per_doc_cuts_documents_first(cross_encoder_dirs, documents):
    from transformers import AutoTokenizer

    folder = cross_encoder_dirs["bert"][0]
    reranker = Reranker.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    query_tokens = len(tokenizer(QUERIES[1], add_special_tokens=False)["input_ids"])
    cut = reranker.prepare(QUERIES[1], documents, max_tokens_per_doc=5)
    room = query_tokens + 5 + 3  # [CLS] q [SEP] d [SEP]
    want = [
        tokenizer(QUERIES[1], doc, truncation="only_second", max_length=room)["input_ids"]
        for doc in documents
    ]
    assert [p.ids.tolist() for p in cut.pairs] == want
    assert max(cut.token_counts) == room


def test_micro_batches_and_threads_do_not_change_scores(cross_encoder_dirs, documents):
    folder = cross_encoder_dirs["bert"][0]
    one_by_one = Reranker.from_pretrained(folder, max_batch_tokens=1)  # a batch per pair
    shared = Reranker.from_pretrained(folder, max_batch_tokens=4096)
    expected = one_by_one.score([(QUERIES[2], d) for d in documents])
    results: dict[int, list] = {}

    def work(n: int) -> None:
        results[n] = shared.rank(QUERIES[2], documents)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    order = np.argsort(-expected, kind="stable").tolist()
    for ranked in results.values():
        assert [r.index for r in ranked] == order
        np.testing.assert_allclose([r.score for r in ranked], expected[order], atol=1e-5)
    assert len(results) == 4


def test_bad_arguments(cross_encoder_dirs):
    reranker = Reranker.from_pretrained(cross_encoder_dirs["bert"][0])
    with pytest.raises(InputError, match="top_n must be a positive integer"):
        reranker.rank("q", ["d"], top_n=0)
    with pytest.raises(InputError, match=r"documents\[1\] must be a string"):
        reranker.rank("q", ["d", 3])
    with pytest.raises(InputError, match="query must be a string"):
        reranker.rank(None, ["d"])
    assert reranker.rank("q", []) == []


def test_max_tokens_per_doc_and_pairs_are_checked(cross_encoder_dirs):
    """max_tokens_per_doc is a positive integer (0 and -1 were taken as slice ends: an empty or a
    one-token-shorter document, scored silently); `score` takes (first, second) pairs and names
    the one that is not, rather than an IndexError or a TypeError from inside."""
    reranker = Reranker.from_pretrained(cross_encoder_dirs["bert"][0])
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(InputError, match="max_tokens_per_doc must be a positive integer") as e:
            reranker.rank("q", ["a b c"], max_tokens_per_doc=bad)  # type: ignore[arg-type]
        assert e.value.param == "max_tokens_per_doc"
    assert reranker.rank("q", ["a b c"], max_tokens_per_doc=1)
    for bad, where in [
        (None, "pairs must be"),
        ("ab", "pairs must be"),
        ((pair for pair in [("q", "d")]), "pairs must be"),
        ([("q",)], r"pairs\[0\] must be a \(first, second\) pair"),
        ([("q", "d"), ("q", "d", "e")], r"pairs\[1\] must be a \(first, second\) pair"),
        ([("q", "d"), "qd"], r"pairs\[1\] must be a \(first, second\) pair"),
        ([("q", None)], r"pairs\[0\]\[1\] must be a string, not NoneType"),
    ]:
        with pytest.raises(InputError, match=where) as e:
            reranker.score(bad)  # type: ignore[arg-type]
        assert e.value.param == "pairs"
    np.testing.assert_array_equal(
        reranker.score([["q", "d"]]),
        reranker.score([("q", "d")]),  # type: ignore[list-item]
    )


def test_a_lone_surrogate_is_an_input_error_naming_the_text(cross_encoder_dirs):
    reranker = Reranker.from_pretrained(cross_encoder_dirs["bert"][0])
    with pytest.raises(InputError, match=r"documents\[1\] is not valid UTF-8 text"):
        reranker.rank("q", ["d", "\ud800"])
    with pytest.raises(InputError, match="query is not valid UTF-8 text"):
        reranker.rank("\ud800", ["d"])
    with pytest.raises(InputError, match=r"pairs\[0\]\[1\] is not valid UTF-8 text"):
        reranker.score([("q", "\ud800")])


def test_model_kind(cross_encoder_dirs, minilm_dir):
    assert model_kind(minilm_dir) == EMBEDDER
    for folder, _ in cross_encoder_dirs.values():
        assert model_kind(folder) == RERANKER


def declare_activation(source: Path, out: Path, where: str, path: str) -> Path:
    """A copy of a cross-encoder folder whose config declares `path` as CrossEncoder's
    activation, in `where`: the place sentence-transformers v5+, v4 or <v4 saved it."""
    import json
    import shutil

    if where == "st_config":
        # Saved by CrossEncoder (modules.json): its config_sentence_transformers.json wins over
        # a config.json that says otherwise.
        _cross_encoder(source).save(str(out))
        st_config = json.loads((out / "config_sentence_transformers.json").read_text())
        st_config["activation_fn"] = path
        (out / "config_sentence_transformers.json").write_text(json.dumps(st_config))
        path = "torch.nn.modules.activation.Sigmoid"
    else:
        shutil.copytree(source, out)
    config = json.loads((out / "config.json").read_text())
    if where in ("config", "st_config"):
        config["sentence_transformers"] = {"activation_fn": path}
    else:
        config["sbert_ce_default_activation_function"] = path
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.mark.parametrize(
    ("head", "where", "path"),
    [
        ("bert", "config", "torch.nn.modules.linear.Identity"),  # ms-marco cross-encoders'
        ("bert", "legacy", "torch.nn.modules.linear.Identity"),
        ("bert", "st_config", "torch.nn.modules.linear.Identity"),
        ("bert", "config", "torch.nn.modules.activation.Sigmoid"),
        ("bert3", "config", "torch.nn.modules.activation.Sigmoid"),
    ],
)
def test_declared_activation_is_cross_encoders(
    head, where, path, cross_encoder_dirs, documents, tmp_path
):
    """The activation a folder declares is the one CrossEncoder.predict applies: Identity gives
    the raw logits, Sigmoid a sigmoid (per label on a multi-label head)."""
    folder = declare_activation(cross_encoder_dirs[head][0], tmp_path / head, where, path)
    reranker = Reranker.from_pretrained(folder)
    pairs = [(QUERIES[1], doc) for doc in documents]
    expected = _cross_encoder(folder).predict(pairs, batch_size=16)
    got = reranker.score(pairs)
    np.testing.assert_allclose(got, expected, atol=SCORE_ATOL, rtol=0)
    if path.endswith("Identity"):
        assert (got < 0).any() or (got > 1).any()  # logits, not probabilities
        np.testing.assert_allclose(reranker.score(pairs, raw_scores=True), got, atol=1e-6)
    relevance = expected if expected.ndim == 1 else expected[:, -1]
    ranked = reranker.rank(QUERIES[1], documents, top_n=5)
    np.testing.assert_allclose(
        [r.score for r in ranked], np.sort(relevance)[::-1][:5], atol=SCORE_ATOL, rtol=0
    )


def test_a_null_activation_fn_is_cross_encoders_default_not_the_older_key(
    cross_encoder_dirs, documents, tmp_path
):
    """config.json's `sentence_transformers.activation_fn: null` is there, so CrossEncoder takes
    its default (a sigmoid on one logit) and never reads `sbert_ce_default_activation_function`."""
    import json

    folder = declare_activation(
        cross_encoder_dirs["bert"][0], tmp_path / "bert", "legacy", "torch.nn.Identity"
    )
    config = json.loads((folder / "config.json").read_text())
    config["sentence_transformers"] = {"activation_fn": None}
    (folder / "config.json").write_text(json.dumps(config))
    pairs = [(QUERIES[1], doc) for doc in documents]
    expected = _cross_encoder(folder).predict(pairs, batch_size=16)
    assert ((expected > 0) & (expected < 1)).all()  # a sigmoid, not the older key's Identity
    got = Reranker.from_pretrained(folder).score(pairs)
    np.testing.assert_allclose(got, expected, atol=SCORE_ATOL, rtol=0)


def test_an_identity_on_a_multi_label_head_keeps_the_softmax(cross_encoder_dirs, tmp_path):
    """CrossEncoder's own default for several labels is Identity, which its `apply_softmax=True`
    turns into the probabilities that a multi-label head's scores are here, declared or not."""
    bert3 = cross_encoder_dirs["bert3"][0]
    folder = declare_activation(bert3, tmp_path / "b", "config", "torch.nn.Identity")
    pairs = [(QUERIES[0], "the software is provided as is")]
    np.testing.assert_allclose(
        Reranker.from_pretrained(folder).score(pairs),
        Reranker.from_pretrained(bert3).score(pairs),
        atol=1e-6,
    )


def test_other_activations_are_refused(cross_encoder_dirs, tmp_path):
    bert = cross_encoder_dirs["bert"][0]
    tanh = declare_activation(bert, tmp_path / "tanh", "config", "torch.nn.modules.activation.Tanh")
    with pytest.raises(
        ValueError, match=r"activation_fn is 'torch\.nn\.modules\.activation\.Tanh'"
    ):
        Reranker.from_pretrained(tanh)
    softmax = declare_activation(bert, tmp_path / "softmax", "legacy", "torch.nn.Softmax")
    with pytest.raises(ValueError, match="Softmax on a one-logit head"):
        Reranker.from_pretrained(softmax)
