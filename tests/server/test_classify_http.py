"""Classification over HTTP: TEI's `/predict` (texts, pairs, batches, raw scores, truncation) with
httpx and with `huggingface_hub.InferenceClient.text_classification`, vLLM's `/classify`, and
their errors in each route's shape, on a server that also embeds and reranks. Expected values are
the library's `Classifier`, itself held to transformers' pipeline in tests/test_classify.py."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from embedserve.classification import Classifier
from embedserve.server.config import Limits, ModelSpec
from embedserve.server.limits import CHUNK_CHARS

from ..support.cross_encoders import QUERIES
from ..support.edge_texts import EDGE_TEXTS
from .conftest import KEY, MODEL, LiveServer, auth, live_server, unhurried

CLASSIFIER = "emotions"  # BERT, three labels, softmax
MULTI = "tags"  # BERT, three labels, multi_label_classification
ONE = "relevance"  # BERT, one label


@pytest.fixture(scope="module")
def classifiers(classifier_dirs) -> dict[str, Classifier]:
    return {
        CLASSIFIER: Classifier.from_pretrained(classifier_dirs["bert3"], name=CLASSIFIER),
        MULTI: Classifier.from_pretrained(classifier_dirs["bert3_multi"], name=MULTI),
        ONE: Classifier.from_pretrained(classifier_dirs["bert1"], name=ONE),
    }


@pytest.fixture(scope="module")
def texts(reference) -> list[str]:
    return list(dict.fromkeys(reference["texts"][2::9])) + EDGE_TEXTS


@pytest.fixture(scope="module")
def served(engine, classifiers, classifier_dirs) -> Iterator[LiveServer]:
    """The embedder first: routes without `model` must find the first classifier anyway."""
    config = unhurried(
        models=(
            ModelSpec(MODEL),
            ModelSpec(str(classifier_dirs["bert3"]), CLASSIFIER),
            ModelSpec(str(classifier_dirs["bert3_multi"]), MULTI),
            ModelSpec(str(classifier_dirs["bert1"]), ONE),
        ),
        api_keys=(KEY,),
        # Fewer documents than inputs: /predict's pairs are held to max_inputs, as its texts.
        limits=Limits(max_inputs=64, max_documents=16, max_body_bytes=2_000_000),
    )
    with live_server(config, engines={MODEL: engine, **classifiers}) as live:
        yield live


def post(url: str, route: str, body: object) -> httpx.Response:
    return httpx.post(url + route, json=body, headers=auth(), timeout=60)


def as_dicts(predicted) -> list[list[dict]]:
    return [[{"score": x.score, "label": x.label} for x in row] for row in predicted]


def close(got, want) -> None:
    """Same labels in the same order, scores within float32 rounding of the JSON."""
    assert [[x["label"] for x in row] for row in got] == [[x["label"] for x in row] for row in want]
    np.testing.assert_allclose(
        [[x["score"] for x in row] for row in got],
        [[x["score"] for x in row] for row in want],
        rtol=1e-6,
        atol=1e-7,
    )


@pytest.mark.parametrize("name", [CLASSIFIER, MULTI, ONE])
def test_predict_texts(served, classifiers, texts, name):
    classifier = classifiers[name]
    response = post(served.url, "/predict", {"model": name, "inputs": texts})
    assert response.status_code == 200, response.text
    close(response.json(), as_dicts(classifier.predict(texts)))
    # One bare text: one list, not a list of lists (TEI's shape).
    one = post(served.url, "/predict", {"model": name, "inputs": texts[0]}).json()
    close([one], as_dicts(classifier.predict(texts[:1])))
    raw = post(served.url, "/predict", {"model": name, "inputs": texts, "raw_scores": True})
    close(raw.json(), as_dicts(classifier.predict(texts, raw_scores=True)))


def test_predict_finds_the_first_classifier_and_reads_pairs(served, classifiers, texts):
    classifier = classifiers[CLASSIFIER]
    # No model: the first classifier served (TEI serves one model), though an embedder comes first.
    pair = post(served.url, "/predict", {"inputs": [QUERIES[1], texts[3]]})
    assert pair.status_code == 200, pair.text
    close([pair.json()], as_dicts(classifier.predict([(QUERIES[1], texts[3])])))
    pairs = [[QUERIES[i % 3], text] for i, text in enumerate(texts)]
    response = post(served.url, "/predict", {"inputs": pairs})
    assert response.status_code == 200, response.text
    close(response.json(), as_dicts(classifier.predict([tuple(p) for p in pairs])))


def test_predict_truncation(served, classifiers, texts):
    classifier = classifiers[CLASSIFIER]
    long_text = max(texts, key=len)
    left = post(
        served.url, "/predict", {"inputs": [long_text], "truncation_direction": "Left"}
    ).json()
    close(left, as_dicts(classifier.predict([long_text], truncation_direction="left")))
    right = post(served.url, "/predict", {"inputs": [long_text]}).json()
    assert right != left
    # (Two strings would be one pair, as TEI reads them.)
    refused = post(served.url, "/predict", {"inputs": ["ok", "fine", long_text], "truncate": False})
    assert refused.status_code == 422, refused.text  # TEI's Validation
    body = refused.json()
    assert body["error_type"] == "Validation" and "inputs[2] has" in body["error"]


def test_a_text_too_long_in_a_later_chunk_is_named_by_its_place_in_the_request(served, texts):
    # Blanks are characters but no tokens: the two padded texts fit the model, and fill the
    # first chunks of CHUNK_CHARS so that the long text is tokenized in a later one.
    padded = [" " * (CHUNK_CHARS - 100) + "ok", " " * (CHUNK_CHARS - 100) + "fine"]
    body = {"inputs": [*padded, max(texts, key=len)], "truncate": False}
    refused = post(served.url, "/predict", body)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"].startswith("inputs[2] has ")


def test_inference_client_text_classification(served, classifiers, texts):
    from huggingface_hub import InferenceClient

    client = InferenceClient(served.url + "/predict", token=KEY)
    got = client.text_classification(texts[1])
    want = classifiers[CLASSIFIER].predict(texts[1:2])[0]
    assert [x.label for x in got] == [x.label for x in want]
    np.testing.assert_allclose([x.score for x in got], [x.score for x in want], rtol=1e-6)
    top = client.text_classification(texts[1], top_k=1, function_to_apply="sigmoid")
    sigmoid = classifiers[CLASSIFIER].predict(texts[1:2], function="sigmoid", top_k=1)[0]
    assert [x.label for x in top] == [sigmoid[0].label]
    assert top[0].score == pytest.approx(sigmoid[0].score, rel=1e-6)


def test_classify_vllm_shape(served, classifiers, texts):
    classifier = classifiers[MULTI]
    for route in ("/classify", "/v1/classify"):
        response = post(served.url, route, {"model": MULTI, "input": texts})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["object"] == "list" and body["model"] == MULTI
        assert body["id"].startswith("classify-")
        probs = classifier.probabilities(classifier.logits(classifier.prepare_texts(texts).pairs))
        assert [d["index"] for d in body["data"]] == list(range(len(texts)))
        np.testing.assert_allclose([d["probs"] for d in body["data"]], probs, rtol=1e-6)
        labels = classifier.model_info.labels
        assert [d["label"] for d in body["data"]] == [labels[int(np.argmax(p))] for p in probs]
        assert {d["num_classes"] for d in body["data"]} == {3}
        usage = body["usage"]
        assert usage["prompt_tokens"] == usage["total_tokens"] > len(texts)
        assert usage["completion_tokens"] == 0
    one = post(served.url, "/classify", {"model": ONE, "input": "hello", "use_activation": False})
    logits = classifiers[ONE].logits(classifiers[ONE].prepare_texts(["hello"]).pairs)
    assert one.json()["data"][0]["probs"] == pytest.approx(logits[0].tolist(), rel=1e-6)
    # truncate_prompt_tokens keeps the last k tokens, special tokens included (vLLM).
    long_text = max(texts, key=len)
    cut = post(served.url, "/classify", {"input": [long_text], "truncate_prompt_tokens": 20}).json()
    assert cut["usage"]["prompt_tokens"] == 20


@pytest.mark.parametrize(
    ("route", "body", "status", "needle"),
    [
        ("/predict", {"model": MODEL, "inputs": "hi"}, 424, "no classification head"),
        ("/predict", {"inputs": []}, 400, "must not be an empty array"),
        ("/predict", {"inputs": ["a", ["b", "c"]]}, 422, "mixes texts and pairs"),
        ("/predict", {"inputs": [["a", "b", "c"]]}, 422, "inputs[0] must be"),
        ("/predict", {"inputs": 3}, 422, "inputs must be"),
        ("/predict", {"inputs": "a", "parameters": {"top_k": 0}}, 422, "top_k"),
        ("/predict", {"inputs": "a", "parameters": {"function_to_apply": "tanh"}}, 422, "tanh"),
        ("/predict", {"inputs": "a", "colour": 1}, 422, "colour"),
        ("/predict", {"inputs": ["a", "b"], "truncation_direction": "left"}, 422, "right"),
        ("/predict", {"inputs": ["a"], "truncation_direction": "middle"}, 422, "'middle'"),
        ("/predict", {"model": "nope", "inputs": "a"}, 404, "nope"),
        ("/predict", {"inputs": ["x"] * 65}, 422, "at most 64"),
        ("/predict", {"inputs": [["q", "x"]] * 65}, 422, "at most 64"),
        ("/classify", {"model": MODEL, "input": "hi"}, 400, "no classification head"),
        ("/classify", {"input": ["a", 3]}, 400, "input[1] must be a string"),
        ("/classify", {"input": "a", "truncate_prompt_tokens": 0}, 400, "truncate_prompt"),
        ("/v1/classify", {"input": []}, 400, "must not be an empty array"),
        ("/v1/classify", {"prompt": "a"}, 400, "prompt"),
    ],
)
def test_errors_in_each_routes_shape(served, route, body, status, needle):
    """/predict is TEI's: its statuses (TEI_STATUSES in test_adapters.py), 424 for a model
    without the head, 400 for empty inputs, 422 for any other mistake."""
    response = post(served.url, route, body)
    assert response.status_code == status, response.text
    error = response.json()
    if route == "/predict":
        assert set(error) == {"error", "error_type"} and needle in error["error"]
    else:
        assert needle in error["error"]["message"], error


def test_a_reranker_folder_classifies_and_a_classifier_reranks(served, texts):
    """One model, every task its head allows: the 3-label classifier answers /v1/rerank too."""
    response = post(
        served.url, "/v1/rerank", {"model": CLASSIFIER, "query": "q", "documents": texts[:4]}
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 4


def test_a_cross_encoder_refuses_an_instruction(served):
    body = {"model": CLASSIFIER, "text_1": "q", "text_2": ["a"], "instruction": "judge"}
    response = post(served.url, "/v1/score", body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "instruction" and "takes no instruction" in error["message"]


@pytest.mark.parametrize("route", ["/predict", "/classify"])
@pytest.mark.parametrize("body", [b'{"inputs":"\xff","input":"\xff"}', b"[1]", b"{", b'"a"'])
def test_bodies_that_are_no_json_object_are_400(served, route, body):
    response = httpx.post(
        served.url + route,
        content=body,
        headers={**auth(), "content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    error = response.json()
    message = error["error"] if route == "/predict" else error["error"]["message"]
    assert "JSON" in message
