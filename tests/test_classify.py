"""The Classifier against transformers' `pipeline("text-classification", top_k=None)` on tiny
random-weight classifiers (BERT with 1, 3 and 3 multi-label heads, XLM-RoBERTa with 2 and 5,
DistilBERT with 5, ModernBERT with 2), on real texts of mixed lengths (several past the 128-token
limit, truncated by both) and the edge texts, alone and as pairs."""

from __future__ import annotations

import numpy as np
import pytest
from embedserve.classification import Classifier, default_function
from embedserve.errors import InputError
from embedserve.pairs import TextTooLongError
from embedserve.reranker import Reranker

from .support.cross_encoders import QUERIES
from .support.edge_texts import EDGE_TEXTS

# Probabilities (and raw logits) of ONNX Runtime's float32 graph against PyTorch's.
ATOL = 1e-5


@pytest.fixture(scope="module")
def texts(reference) -> list[str]:
    real = list(dict.fromkeys(reference["texts"][::5]))
    assert max(reference["tokens_untruncated"][::5]) > 256
    return real + EDGE_TEXTS


def _pipeline(folder):
    import torch
    from transformers import pipeline

    torch.set_num_threads(1)  # the machine is shared; the reference need not be fast
    return pipeline("text-classification", model=str(folder), device="cpu", top_k=None)


def _as_arrays(results, labels) -> np.ndarray:
    """The pipeline's [{label, score}] per input as [inputs, labels] in the model's label order."""
    return np.array(
        [[{r["label"]: r["score"] for r in row}[name] for name in labels] for row in results]
    )


def _got(predicted, labels) -> np.ndarray:
    return np.array(
        [[{x.label: x.score for x in row}[name] for name in labels] for row in predicted]
    )


@pytest.mark.parametrize(
    "which", ["bert1", "bert3", "bert3_multi", "xlmr2", "xlmr5", "distilbert5", "modernbert2"]
)
def test_texts_match_the_text_classification_pipeline(which, classifier_dirs, texts):
    folder = classifier_dirs[which]
    classifier = Classifier.from_pretrained(folder, max_batch_tokens=512)
    pipe = _pipeline(folder)
    labels = classifier.model_info.labels
    assert len(labels) == pipe.model.config.num_labels and labels[0] != "LABEL_0"
    expected = pipe(texts, truncation=True, batch_size=8)
    got = classifier.predict(texts)
    np.testing.assert_allclose(_got(got, labels), _as_arrays(expected, labels), atol=ATOL, rtol=0)
    # The same order as the pipeline's: best first.
    for row, want in zip(got, expected):
        scores = [x.score for x in row]
        assert scores == sorted(scores, reverse=True)
        assert row[0].label == want[0]["label"] or np.isclose(
            want[0]["score"], want[1]["score"], atol=ATOL
        )
    # Raw scores are the logits, as the pipeline's function_to_apply="none" gives them.
    raw = pipe(texts, truncation=True, batch_size=8, function_to_apply="none")
    np.testing.assert_allclose(
        _got(classifier.predict(texts, raw_scores=True), labels),
        _as_arrays(raw, labels),
        atol=ATOL * 10,
        rtol=1e-5,
    )
    spread = _got(got, labels)
    assert np.std(spread[:, 0]) > 0.01  # the random head tells the texts apart


@pytest.mark.parametrize("which", ["bert3", "xlmr5"])
def test_pairs_match_the_pipeline(which, classifier_dirs, texts):
    folder = classifier_dirs[which]
    classifier = Classifier.from_pretrained(folder)
    pipe = _pipeline(folder)
    labels = classifier.model_info.labels
    # transformers reads an empty text_pair as no pair at all; a pair's empty side is ours alone.
    pairs = [(QUERIES[i % len(QUERIES)], text) for i, text in enumerate(texts) if text]
    expected = pipe([{"text": a, "text_pair": b} for a, b in pairs], truncation=True)
    np.testing.assert_allclose(
        _got(classifier.predict(pairs), labels), _as_arrays(expected, labels), atol=ATOL, rtol=0
    )
    # Texts and pairs mixed in one call keep their places.
    mixed = [texts[0], pairs[1], texts[2]]
    got = _got(classifier.predict(mixed), labels)
    alone = _got(classifier.predict([texts[0], texts[2]]), labels)
    np.testing.assert_allclose(got[[0, 2]], alone, atol=1e-6)
    np.testing.assert_allclose(got[1], _as_arrays(expected[1:2], labels)[0], atol=ATOL)


def test_left_truncation_keeps_the_end(classifier_dirs, texts):
    folder = classifier_dirs["bert3"]
    classifier = Classifier.from_pretrained(folder)
    pipe = _pipeline(folder)
    pipe.tokenizer.truncation_side = "left"
    labels = classifier.model_info.labels
    long_texts = [t for t in texts if len(t) > 2_000]
    assert long_texts
    expected = pipe(long_texts, truncation=True)
    got = classifier.predict(long_texts, truncation_direction="left")
    np.testing.assert_allclose(_got(got, labels), _as_arrays(expected, labels), atol=ATOL)
    right = classifier.predict(long_texts)
    assert not np.allclose(_got(right, labels), _got(got, labels), atol=1e-3)


def test_functions_and_errors(classifier_dirs, texts):
    assert default_function(1, None) == "sigmoid"
    assert default_function(3, None) == "softmax"
    assert default_function(3, "multi_label_classification") == "sigmoid"
    assert default_function(3, "single_label_classification") == "softmax"
    assert default_function(1, "regression") == "none"
    classifier = Classifier.from_pretrained(classifier_dirs["bert3"])
    softmax = _got(classifier.predict(texts[:5]), classifier.model_info.labels)
    np.testing.assert_allclose(softmax.sum(axis=1), 1.0, atol=1e-6)
    sigmoid = classifier.predict(texts[:5], function="sigmoid")
    assert len(sigmoid[0]) == 3 and sum(x.score for x in sigmoid[0]) != pytest.approx(1.0)
    assert len(classifier.predict(texts[:1], top_k=2)[0]) == 2
    long_text = max(texts, key=len)
    with pytest.raises(TextTooLongError) as caught:
        classifier.predict(["short", long_text], truncate=False)
    assert "inputs[1] has" in str(caught.value)
    with pytest.raises(InputError):
        classifier.predict(["a", ("only one",)])  # type: ignore[list-item]
    with pytest.raises(InputError):
        classifier.predict(["a"], function="tanh")


def test_truncation_direction_is_checked(classifier_dirs, texts):
    """ "left" or "right", nothing else; pairs only "right" (cut longest side first), as the
    server's /predict has it."""
    classifier = Classifier.from_pretrained(classifier_dirs["bert3"], max_length=16)
    long_text = max(texts, key=len)
    for direction in ("LEFT", "middle", ""):
        with pytest.raises(
            InputError, match=f"truncation_direction must be one of .*{direction!r}"
        ):
            classifier.predict([long_text], truncation_direction=direction)
        with pytest.raises(InputError, match="truncation_direction"):
            classifier.prepare_texts([long_text], truncation_direction=direction)
    for inputs in ([("q", long_text)], ["a text", ("q", long_text)]):
        with pytest.raises(InputError, match="'right' for pairs.*got 'left'") as caught:
            classifier.predict(inputs, truncation_direction="left")
        assert caught.value.param == "truncation_direction"
    assert classifier.predict([("q", long_text)], truncation_direction="right")


def test_predict_checks_its_arguments_before_the_model_runs(classifier_dirs):
    """A string is one text (not one input a character); anything that is not an array of texts
    or pairs, a pair holding a non-string, or a top_k that is not a positive integer is an
    InputError naming it, never a TypeError from inside or labels silently dropped."""
    classifier = Classifier.from_pretrained(classifier_dirs["bert3"])
    assert classifier.predict("a text") == classifier.predict(["a text"])
    for bad in (None, 42, (text for text in ["a"]), {"a": 1}):
        with pytest.raises(InputError, match="inputs must be") as caught:
            classifier.predict(bad)  # type: ignore[arg-type]
        assert caught.value.param == "inputs"
    with pytest.raises(
        InputError, match=r"inputs\[1\]\[1\] must be a string, not NoneType"
    ) as caught:
        classifier.predict(["a", ("q", None)])  # type: ignore[list-item]
    assert caught.value.index == 1 and caught.value.param == "inputs"
    for top_k in (0, -1, 1.5, "2", True):
        with pytest.raises(InputError, match="top_k must be a positive integer") as caught:
            classifier.predict(["a"], top_k=top_k)  # type: ignore[arg-type]
        assert caught.value.param == "top_k"
    assert len(classifier.predict(["a"], top_k=10)[0]) == 3


def test_errors_in_mixed_inputs_name_the_input_s_own_position(classifier_dirs):
    """Texts and pairs are prepared apart; an error names `inputs[i]` by its place in the call,
    not in its part (a long text after a pair was `inputs[0]`)."""
    classifier = Classifier.from_pretrained(classifier_dirs["bert3"], max_length=16)
    long_text = "word " * 50
    for inputs, index in [
        ([("q", "d"), long_text], 1),
        (["a", "b", ("q", long_text)], 2),
        ([("q", "d"), "a", "\ud800"], 2),
        (["a", ("q", "\ud800")], 1),
    ]:
        with pytest.raises(InputError, match=rf"inputs\[{index}\]") as caught:
            classifier.predict(inputs, truncate=False)
        assert caught.value.index == index


@pytest.mark.parametrize("bad", ["no", None, 0, [False]])
def test_yes_no_arguments_that_are_not_bools_are_input_errors(classifier_dirs, bad):
    """`truncate` and `raw_scores` were taken for their truthiness: truncate="no" truncated,
    None refused a long text; raw_scores="no" answered the raw logits."""
    classifier = Classifier.from_pretrained(classifier_dirs["bert3"], max_length=16)
    reranker = Reranker.from_pretrained(classifier_dirs["bert3"], max_length=16)
    long_text = "word " * 40
    calls = (
        lambda options: classifier.predict([long_text], **options),
        lambda options: reranker.score([("q", long_text)], **options),
        lambda options: reranker.rank("q", [long_text], **options),
    )
    for param in ("truncate", "raw_scores"):
        for call in calls:
            with pytest.raises(InputError, match=f"{param} must be True or False, got ") as caught:
                call({param: bad})
            assert caught.value.param == param
    want = reranker.score([("q", long_text)], raw_scores=True)
    np.testing.assert_array_equal(reranker.score([("q", long_text)], raw_scores=np.True_), want)


def test_numpy_integers_are_counts(classifier_dirs):
    """np.int64(1) was refused as "top_k must be a positive integer" (top_n and
    max_tokens_per_doc too); NumPy's bools are still no count."""
    classifier = Classifier.from_pretrained(classifier_dirs["bert3"])
    reranker = Reranker.from_pretrained(classifier_dirs["bert3"])
    assert classifier.predict(["a"], top_k=np.int64(1)) == classifier.predict(["a"], top_k=1)
    documents = ["a b c", "d e f"]
    want = reranker.rank("q", documents, top_n=1, max_tokens_per_doc=2)
    assert reranker.rank("q", documents, top_n=np.int64(1), max_tokens_per_doc=np.int32(2)) == want
    with pytest.raises(InputError, match="top_k must be a positive integer, got np.True_"):
        classifier.predict(["a"], top_k=np.True_)
    with pytest.raises(InputError, match="top_n must be a positive integer, got np.int64\\(0\\)"):
        reranker.rank("q", documents, top_n=np.int64(0))
