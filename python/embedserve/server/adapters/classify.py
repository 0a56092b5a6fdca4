"""Sequence-classification routes: TEI's `/predict` and vLLM's `/classify` (`/v1/classify`).

`/predict` takes what TEI takes: `inputs` as a text, a pair `[a, b]`, or a list of texts or of
pairs, with `raw_scores`, `truncate`, `truncation_direction`; each input's labels come back best
first (a single input as one list, a batch as a list of lists). A body with `parameters` (what
`huggingface_hub.InferenceClient(URL/predict).text_classification` sends: `function_to_apply`,
`top_k`) gets the Inference API's answer, a list of lists even for one text, which that client
reads in full (given TEI's flat list it keeps only the best label).

`/classify` takes vLLM's body (`input`: a text or a list; `truncate_prompt_tokens`,
`use_activation`) and answers vLLM's `{"data": [{"index", "label", "probs", "num_classes"}]}`,
which SGLang's `/v1/classify` copies. Infinity's `/classify` (a list of `{score, label}` per text)
is not served: its shape and vLLM's cannot share a route.

Probabilities are transformers' text-classification pipeline's (`classification.default_function`:
softmax, or a sigmoid for one label and `multi_label_classification`); TEI itself applies a
softmax to every multi-label head whatever its problem type. Texts run as the classify task
(`server.tasks.classify`), pairs as the pairs task, on the shared pipeline.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
from litestar import Request, Response, post

from embedserve.classification import (
    FUNCTIONS,
    NONE,
    check_single_texts,
    check_truncation_direction,
    probabilities,
    sorted_labels,
)
from embedserve.models.kind import RERANKER
from embedserve.reranker import Reranker
from embedserve.server.adapters.base import job_response
from embedserve.server.auth import require_api_key
from embedserve.server.errors import invalid
from embedserve.server.fields import decode_object, kind_of, optional, refuse_unknown, tei_direction
from embedserve.server.pipeline import Job
from embedserve.server.plumbing import read_parsed, state
from embedserve.server.registry import ModelRegistry, ServedModel
from embedserve.server.tasks.classify import TextsJob
from embedserve.server.tasks.pairs import PairsJob

PREDICT_FIELDS = frozenset(
    {"model", "inputs", "truncate", "truncation_direction", "raw_scores", "parameters"}
)
PARAMETER_FIELDS = frozenset({"function_to_apply", "top_k"})
CLASSIFY_FIELDS = frozenset(
    {"model", "input", "user", "truncate", "truncate_prompt_tokens", "use_activation"}
)
Positive = Annotated[int, msgspec.Meta(ge=1)]
_TEXT = {"type": "string"}
_PAIR = {"type": "array", "items": _TEXT, "minItems": 2, "maxItems": 2}
# A text, a pair, or a non-empty list of texts or of pairs: several array shapes, so a schema here.
PredictInputs = Annotated[
    Any,
    msgspec.Meta(
        extra_json_schema={
            "anyOf": [
                _TEXT,
                _PAIR,
                {"type": "array", "items": _TEXT, "minItems": 1},
                {"type": "array", "items": _PAIR, "minItems": 1},
            ]
        }
    ),
]


# -- the bodies, as /openapi.json documents them (the parsers below accept these fields) --


class PredictParameters(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The Inference API's text-classification settings."""

    function_to_apply: Literal["sigmoid", "softmax", "none"] | None = None
    top_k: Positive | None = None


class PredictRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """TEI's `POST /predict`; without `model`, the first classifier served answers."""

    inputs: PredictInputs
    model: str | None = None
    truncate: bool | None = None
    truncation_direction: Literal["Left", "Right", "left", "right"] | None = None
    raw_scores: bool | None = None
    parameters: PredictParameters | None = None


class Prediction(msgspec.Struct):
    score: float
    label: str


class ClassifyRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """vLLM's `POST /classify`."""

    input: str | list[str]
    model: str | None = None
    user: str | None = None
    truncate: bool | None = None
    truncate_prompt_tokens: Annotated[int, msgspec.Meta(ge=-1)] | None = None
    use_activation: bool | None = None


class ClassifyData(msgspec.Struct):
    index: int
    label: str
    probs: list[float]
    num_classes: int


class ClassifyUsage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int
    prompt_tokens_details: None


class ClassifyResponse(msgspec.Struct):
    id: str
    object: Literal["list"]
    created: int
    model: str
    data: list[ClassifyData]
    usage: ClassifyUsage


# -- parsing --


@dataclass(frozen=True)
class Predict:
    """A parsed `/predict`: texts or pairs (one of them), and how to answer."""

    texts: list[str] | None
    pairs: list[tuple[str, str]] | None
    single: bool  # one input sent bare: TEI answers one list, not a list of lists
    model: str | None
    truncate: bool | None
    direction: str
    function: str | None  # None: the model's own
    top_k: int | None
    inference_api: bool  # `parameters` sent: always a list of lists


def parse_predict(body: bytes) -> Predict:
    raw = decode_object(body)
    refuse_unknown(raw, PREDICT_FIELDS)
    texts, pairs, single = _predict_inputs(raw.get("inputs"))
    direction = tei_direction(optional(raw, "truncation_direction", str))
    check_truncation_direction(direction, pairs=pairs is not None)
    function = NONE if optional(raw, "raw_scores", bool) else None
    top_k = None
    parameters = optional(raw, "parameters", dict)
    if parameters is not None:
        refuse_unknown(parameters, PARAMETER_FIELDS)
        asked = optional(parameters, "function_to_apply", str)
        if asked is not None and asked not in FUNCTIONS:
            raise invalid(
                f"function_to_apply must be one of {', '.join(FUNCTIONS)}, got {asked!r}",
                param="function_to_apply",
            )
        function = asked or function
        top_k = optional(parameters, "top_k", int)
        if top_k is not None and top_k < 1:
            raise invalid(f"top_k must be at least 1, got {top_k}", param="top_k")
    return Predict(
        texts,
        pairs,
        single,
        optional(raw, "model", str),
        optional(raw, "truncate", bool),
        direction,
        function,
        top_k,
        parameters is not None,
    )


def _predict_inputs(value: Any) -> tuple[list[str] | None, list[tuple[str, str]] | None, bool]:
    """TEI's reading: a text; two texts `[a, b]` are one pair; else a list of texts or of pairs."""
    if value is None:
        raise invalid(
            "'inputs' is a required property", param="inputs", code="missing_required_parameter"
        )
    if isinstance(value, str):
        return [value], None, True
    if not isinstance(value, list):
        raise invalid(
            f"inputs must be a string, a pair of strings or an array of them, not {kind_of(value)}",
            param="inputs",
            code="invalid_type",
        )
    if len(value) == 2 and all(isinstance(item, str) for item in value):
        return None, [(value[0], value[1])], True
    texts: list[str] = []
    pairs: list[tuple[str, str]] = []
    for index, item in enumerate(value):
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item):
            pairs.append((item[0], item[1]))
        else:
            raise invalid(
                f"inputs[{index}] must be a string or a pair of strings, not {kind_of(item)}"
                + (f" of {len(item)} items" if isinstance(item, list) else ""),
                param="inputs",
                code="invalid_type",
            )
    if texts and pairs:
        raise invalid("inputs mixes texts and pairs; send one kind per request", param="inputs")
    return (None, pairs, False) if pairs else (texts, None, False)


@dataclass(frozen=True)
class Classify:
    texts: list[str]
    model: str | None
    truncate: bool | None
    max_tokens: int | None  # vLLM's truncate_prompt_tokens (None for -1: the model's limit)
    keep_end: bool  # truncate_prompt_tokens given: vLLM keeps a cut prompt's last tokens
    activation: bool


def parse_classify(body: bytes) -> Classify:
    raw = decode_object(body)
    refuse_unknown(raw, CLASSIFY_FIELDS)
    value = raw.get("input")
    if value is None:
        raise invalid(
            "'input' is a required property", param="input", code="missing_required_parameter"
        )
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, list):
        texts = value
        bad = next((i for i, item in enumerate(value) if not isinstance(item, str)), None)
        if bad is not None:
            raise invalid(
                f"input[{bad}] must be a string, not {kind_of(value[bad])}",
                param="input",
                code="invalid_type",
            )
    else:
        raise invalid(
            f"input must be a string or an array of strings, not {kind_of(value)}",
            param="input",
            code="invalid_type",
        )
    optional(raw, "user", str)
    cut = optional(raw, "truncate_prompt_tokens", int)
    if cut is not None and cut < 1 and cut != -1:
        raise invalid(
            f"truncate_prompt_tokens must be -1 (the model's limit) or at least 1, got {cut}",
            param="truncate_prompt_tokens",
        )
    activation = optional(raw, "use_activation", bool)
    return Classify(
        texts,
        optional(raw, "model", str),
        optional(raw, "truncate", bool) if cut is None else True,
        None if cut is None or cut == -1 else cut,
        cut is not None,
        True if activation is None else activation,
    )


# -- running --


def _classifier_for(registry: ModelRegistry, name: str | None) -> tuple[ServedModel, Reranker]:
    """The named model, else the first sequence classifier served; a 400 for a model that has no
    classification head."""
    model = registry.get(name) if name is not None else registry.first_ready(RERANKER)
    if model is None:
        if not registry.ready:
            model = next(m for m in registry.models if not m.ready)
            model.require(RERANKER)  # its 503
        raise invalid(
            "no sequence classifier is served; start the server with a model whose config.json "
            "names a *ForSequenceClassification head",
            param="model",
            code="model_not_found",
        )
    if model.ready and model.kind != RERANKER:
        raise invalid(
            f"The model `{model.id}` is an embedding model: it has no classification head "
            "(config.json names no *ForSequenceClassification); name a classifier",
            param="model",
            code="wrong_model_kind",
        )
    classifier, _ = model.require(RERANKER)
    return model, classifier


def _predictions(labels: tuple[str, ...], row: np.ndarray, top_k: int | None) -> list[Prediction]:
    # TEI's field order (score, then label); the order of labels is the library's.
    return [Prediction(item.score, item.label) for item in sorted_labels(labels, row, top_k)]


async def _run(
    request: Request[Any, Any, Any], job: Job[bytes], model: ServedModel
) -> Response[bytes]:
    # Priority from the X-Priority header only: vLLM's own `priority` body field is an integer
    # with another meaning, and TEI's /predict body is closed.
    return await job_response(request, job, model.id, model.batcher, started=time.perf_counter())


@post("/predict", before_request=require_api_key, status_code=200)
async def predict(request: Request[Any, Any, Any]) -> Response[bytes]:
    """TEI: each input's labels with scores, best first."""
    server = state(request)
    parsed = await read_parsed(request, parse_predict)
    model, classifier = _classifier_for(server.registry, parsed.model)
    labels = classifier.model_info.labels

    def render(logits: np.ndarray, tokens: int) -> bytes:
        scores = probabilities(classifier, logits, parsed.function)
        rows = [_predictions(labels, row, parsed.top_k) for row in scores]
        if parsed.single and not parsed.inference_api:
            return msgspec.json.encode(rows[0])
        return msgspec.json.encode(rows)

    job: Job[bytes]
    if parsed.pairs is not None:
        job = PairsJob(
            classifier,
            server.config,
            render,
            firsts=[a for a, _ in parsed.pairs],
            seconds=[b for _, b in parsed.pairs],
            first_param="inputs",
            param="inputs",
            noun="pairs",
            truncate=parsed.truncate,
            max_pairs=server.config.limits.max_inputs,
        )
    else:
        check_single_texts(classifier, "inputs")
        job = TextsJob(
            classifier,
            server.config,
            render,
            texts=parsed.texts or [],
            param="inputs",
            truncate=parsed.truncate,
            direction=parsed.direction,
        )
    return await _run(request, job, model)


async def _classify(request: Request[Any, Any, Any]) -> Response[bytes]:
    server = state(request)
    parsed = await read_parsed(request, parse_classify)
    model, classifier = _classifier_for(server.registry, parsed.model)
    check_single_texts(classifier, "input")
    labels = classifier.model_info.labels

    def render(logits: np.ndarray, tokens: int) -> bytes:
        scores = probabilities(classifier, logits, None if parsed.activation else NONE)
        data = [
            ClassifyData(i, labels[int(np.argmax(row))], row.tolist(), len(labels))
            for i, row in enumerate(scores)
        ]
        return msgspec.json.encode(
            ClassifyResponse(
                id=f"classify-{uuid.uuid4().hex}",
                object="list",
                created=int(time.time()),
                model=model.id,
                data=data,
                usage=ClassifyUsage(tokens, tokens, 0, None),
            )
        )

    job = TextsJob(
        classifier,
        server.config,
        render,
        texts=parsed.texts,
        param="input",
        truncate=parsed.truncate,
        direction="left" if parsed.keep_end else "right",
        max_tokens=parsed.max_tokens,
    )
    return await _run(request, job, model)


@post(["/classify", "/v1/classify"], before_request=require_api_key, status_code=200)
async def classify(request: Request[Any, Any, Any]) -> Response[bytes]:
    """vLLM: each text's label probabilities and most likely label."""
    return await _classify(request)


ROUTES = [predict, classify]
