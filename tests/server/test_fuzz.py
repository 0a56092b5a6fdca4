"""Whatever a client sends to any POST route, the answer is a 2xx in the route's own success
shape or a 4xx in its API's error shape (server/shapes.py), never a 500.

The OpenAI/Azure embeddings routes are fuzzed most (they are the most used); every other POST
route gets the same abuse from a table of its own field names (`ROUTES`), and a test keeps that
table in step with the app's routes, so a new route is fuzzed from the day it is added."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import MODEL, auth

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
fields = {
    "model": st.sampled_from([MODEL, "nope", ""]) | json_values,
    "input": st.text(max_size=30)
    | st.lists(st.text(max_size=20), max_size=4)
    | st.lists(st.integers(-5, 40000), max_size=6)
    | st.lists(st.lists(st.integers(-5, 40000), max_size=5), max_size=3)
    | json_values,
    "encoding_format": st.sampled_from(["float", "base64", "int8"]) | json_values,
    "dimensions": st.integers(-2, 500) | json_values,
    "user": st.text(max_size=5) | json_values,
    "metadata": st.dictionaries(st.text(max_size=70), st.text(max_size=5), max_size=3)
    | json_values,
    "input_type": st.sampled_from(["text", "query", "document", "x"]) | json_values,
    "truncate": json_values,
    "truncation_direction": st.sampled_from(["left", "right", "up"]) | json_values,
    "normalize": json_values,
    "prompt_name": json_values,
    "extra_body": json_values,
    "unknown": json_values,
}
bodies = st.fixed_dictionaries({}, optional=fields)
paths = st.sampled_from(
    [
        "/v1/embeddings",
        "/embeddings",
        "/embeddings?api-version=v1",
        "/models/embeddings?api-version=2024-05-01-preview",
        f"/openai/deployments/{MODEL}/embeddings?api-version=2024-10-21",
    ]
)


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, headers=auth(), timeout=60) as client:
        yield client


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    body = response.json()
    if response.status_code == 200:
        assert list(body) == ["object", "data", "model", "usage"]
    else:
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies, path=paths)
def test_structured_bodies(http, body, path):
    check(
        http.post(
            path, content=msgspec.json.encode(body), headers={"Content-Type": "application/json"}
        )
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=64) | json_values.map(msgspec.json.encode))
def test_arbitrary_bytes(http, raw):
    check(http.post("/v1/embeddings", content=raw))


# -- every POST route --

# Each API's error body, as its clients read it (server/shapes.py writes them).
ERROR_SHAPES: dict[str, Callable[[Any], bool]] = {
    "openai": lambda b: (
        set(b) == {"error"}
        and set(b["error"]) == {"message", "type", "param", "code"}
        and isinstance(b["error"]["message"], str)
    ),
    "tei": lambda b: (
        set(b) == {"error", "error_type"}
        and isinstance(b["error"], str)
        and b["error_type"] in {"Validation", "Empty", "Overloaded", "Unhealthy", "Backend"}
    ),
    "ollama": lambda b: set(b) == {"error"} and isinstance(b["error"], str),
    "cohere": lambda b: set(b) == {"message"} and isinstance(b["message"], str),
}

# Stands for a lone surrogate: JSON can carry `"\ud800"` but a Python str holding one cannot be
# encoded, so the escape is written into the encoded body.
LONE = "<lone surrogate>"
# Over MiniLM's 512 tokens: cut, or refused with truncate false.
LONG = "word " * 600
texts = st.text(max_size=20) | st.sampled_from(["", " ", "\x00", "\u200b", "é" * 40, LONG, LONE])
text_lists = st.lists(texts, max_size=4)
# MiniLM's vocabulary is 30,522 ids: ids in it, its special ids ([PAD], [UNK], [CLS], [SEP],
# [MASK]), ids past it, negative and past 64 bits; arrays past its 512 tokens.
ids = st.integers(-3, 31_000) | st.sampled_from([0, 100, 101, 102, 103, 30_522, 2**31, 2**64])
id_arrays = st.lists(ids, max_size=6) | st.sampled_from([[1000] * 600, [101, 102], [101]])
numbers = st.integers(-2, 600) | st.sampled_from([2**31, 2**64, -(2**63), 1e308, -0.0, 1.5])
models = st.sampled_from([MODEL, f"{MODEL}:latest", "nope", ""])
flags = st.booleans()
directions = st.sampled_from(["left", "Right", "up", ""])
# TEI's InputType is a text or an id array, so one array may hold both.
tei_inputs = texts | text_lists | id_arrays | st.lists(texts | id_arrays, max_size=4)


def is_list_of(item: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda body: isinstance(body, list) and all(item(x) for x in body)


def keys(*names: str) -> Callable[[Any], bool]:
    return lambda body: isinstance(body, dict) and list(body) == list(names)


is_numbers = is_list_of(lambda x: isinstance(x, int | float))
is_strings = is_list_of(lambda x: isinstance(x, str))
is_vectors = is_list_of(is_numbers)


@dataclass(frozen=True)
class Route:
    path: str
    api: str  # whose error shape its 4xx bodies have
    # Plausible values of each field it reads (each of a right type; its inputs field first).
    required: dict[str, st.SearchStrategy[Any]]
    optional: dict[str, st.SearchStrategy[Any]]
    # The shape of its 200 body; None where no served model can answer (no reranker,
    # classifier or sparse model is loaded), so every answer is a 4xx.
    answer: Callable[[Any], bool] | None

    def __str__(self) -> str:
        return self.path


def openai_embeddings(path: str) -> Route:
    return Route(
        path,
        "openai",
        {
            "input": texts | text_lists | id_arrays | st.lists(id_arrays, max_size=3),
            "model": models,
        },
        {
            "encoding_format": st.sampled_from(["float", "base64", "int8", "binary"]),
            "dimensions": numbers,
            "user": texts,
            "input_type": st.sampled_from(["query", "document", "text"]),
        },
        keys("object", "data", "model", "usage"),
    )


EMBED_SETTINGS = {
    "normalize": flags,
    "truncate": flags,
    "truncation_direction": directions,
    "prompt_name": st.sampled_from(["query", "nope"]),
    "dimensions": numbers,
    "encoding_format": st.sampled_from(["float", "base64"]),
}
TEI_EMBED = {**EMBED_SETTINGS, "parameters": st.fixed_dictionaries({}, optional=EMBED_SETTINGS)}
RERANK_SHARED = {
    "model": models,
    "truncate": flags,
    "raw_scores": flags,
    "priority": st.sampled_from(["interactive", "batch", "x"]),
    "instruction": texts,
}
COHERE_RERANK = {
    **RERANK_SHARED,
    "top_n": numbers,
    "return_documents": flags,
    "max_tokens_per_doc": numbers,
}
CLASSIFY = {
    "model": models,
    "user": texts,
    "truncate": flags,
    "truncate_prompt_tokens": numbers,
    "use_activation": flags,
}
TOKEN = keys("id", "text", "special", "start", "stop")
SIMILARITY_INPUTS = st.fixed_dictionaries({"source_sentence": texts, "sentences": text_lists})
DOCUMENTS = st.lists(texts | st.fixed_dictionaries({"text": texts}), max_size=3)
PREDICT_PARAMETERS = st.fixed_dictionaries(
    {}, optional={"function_to_apply": st.sampled_from(["sigmoid", "x"]), "top_k": numbers}
)

ROUTES = [
    openai_embeddings("/v1/embeddings"),
    openai_embeddings("/embeddings"),
    # Azure AI inference (model optional), both paths; Azure OpenAI (the path names the model).
    openai_embeddings("/embeddings?api-version=2024-05-01-preview"),
    openai_embeddings("/models/embeddings?api-version=2024-05-01-preview"),
    openai_embeddings(f"/openai/deployments/{MODEL}/embeddings?api-version=2024-10-21"),
    Route("/embed", "tei", {"inputs": tei_inputs}, TEI_EMBED, is_vectors),
    Route("/", "tei", {"inputs": tei_inputs}, TEI_EMBED, is_vectors),
    Route(
        "/similarity",
        "tei",
        {"inputs": SIMILARITY_INPUTS},
        {"truncate": flags, "truncation_direction": directions, "prompt_name": texts},
        is_numbers,
    ),
    Route(
        "/tokenize",
        "tei",
        {"inputs": texts | text_lists},
        {"add_special_tokens": flags, "prompt_name": st.sampled_from(["query", "nope"])},
        is_list_of(is_list_of(TOKEN)),
    ),
    Route(
        "/decode",
        "tei",
        {"ids": id_arrays | st.lists(id_arrays, max_size=3)},
        {"skip_special_tokens": flags},
        is_strings,
    ),
    Route(
        "/embed_all",
        "tei",
        {"inputs": tei_inputs},
        {
            "truncate": flags,
            "truncation_direction": directions,
            "prompt_name": texts,
            "model": models,
            "is_query": flags,
            "encoding_format": st.sampled_from(["float", "base64"]),
        },
        is_list_of(lambda x: isinstance(x, str) or is_vectors(x)),
    ),
    Route(
        "/embed_sparse",
        "tei",
        {"inputs": tei_inputs},
        {
            "truncate": flags,
            "truncation_direction": directions,
            "prompt_name": texts,
            "top_k": numbers,
            "threshold": numbers,
            "return_tokens": flags,
            "input_type": st.sampled_from(["query", "document"]),
        },
        None,
    ),
    Route(
        "/api/embed",
        "ollama",
        {"input": texts | text_lists, "model": models},
        {
            "truncate": flags,
            "dimensions": numbers,
            "options": st.dictionaries(st.text(max_size=8), json_scalars, max_size=2),
            "keep_alive": st.sampled_from(["5m", -1, 0]),
        },
        keys("model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"),
    ),
    Route(
        "/api/embeddings",
        "ollama",
        {"prompt": texts, "model": models},
        {"options": st.dictionaries(st.text(max_size=8), json_scalars), "keep_alive": numbers},
        keys("embedding"),
    ),
    Route(
        "/v2/embed",
        "cohere",
        {
            "texts": text_lists,
            "model": models,
            "input_type": st.sampled_from(["search_query", "search_document", "x"]),
        },
        {
            "embedding_types": st.lists(
                st.sampled_from(["float", "int8", "uint8", "binary", "ubinary", "base64"])
            ),
            "output_dimension": numbers,
            "max_tokens": numbers,
            "truncate": st.sampled_from(["NONE", "START", "END", "end"]),
            "priority": numbers,
        },
        keys("id", "embeddings", "texts", "meta", "response_type"),
    ),
    Route(
        "/rerank",
        "tei",
        {"query": texts, "texts": text_lists},
        {**RERANK_SHARED, "truncation_direction": directions, "return_text": flags},
        None,
    ),
    Route("/v1/rerank", "cohere", {"query": texts, "documents": DOCUMENTS}, COHERE_RERANK, None),
    Route("/v2/rerank", "cohere", {"query": texts, "documents": DOCUMENTS}, COHERE_RERANK, None),
    *(
        Route(
            path,
            "openai",
            {"text_1": texts | text_lists, "text_2": texts | text_lists},
            RERANK_SHARED,
            None,
        )
        for path in ("/score", "/v1/score")
    ),
    Route(
        "/predict",
        "tei",
        {"inputs": texts | text_lists | st.lists(text_lists, max_size=3)},
        {
            "model": models,
            "truncate": flags,
            "truncation_direction": directions,
            "raw_scores": flags,
            "parameters": PREDICT_PARAMETERS,
        },
        None,
    ),
    *(
        Route(path, "openai", {"input": texts | text_lists}, CLASSIFY, None)
        for path in ("/classify", "/v1/classify")
    ),
]


def route_bodies(route: Route) -> st.SearchStrategy[bytes]:
    """A body of the route's own fields: plausible (each of a right type, its value perhaps not
    right), or with one field of any JSON value (a wrong type, nesting) or one it does not know,
    or any of its fields each of any value, missing ones included; LONE a lone surrogate."""
    every = {**route.required, **route.optional}
    plausible = st.fixed_dictionaries(route.required, optional=route.optional)
    one_wrong = st.builds(
        lambda body, name, value: {**body, name: value},
        plausible,
        st.sampled_from([*every, "unknown"]),
        json_values,
    )
    wild = st.fixed_dictionaries({}, optional={name: s | json_values for name, s in every.items()})
    return st.one_of(plausible, one_wrong, wild).map(
        lambda body: msgspec.json.encode(body).replace(LONE.encode(), b"\\ud800")
    )


# What admission reads beside the body: the priority header (a wrong one is a 400) and the key.
admission_headers = st.fixed_dictionaries(
    {"Content-Type": st.just("application/json")},
    optional={
        "X-Priority": st.sampled_from(["batch", "interactive", "bogus", ""]),
        "Authorization": st.just("Bearer wrong-key"),
    },
)


def check_route(route: Route, response: httpx.Response) -> None:
    status, body = response.status_code, response.json()
    assert status < 500, f"{route}: {status} {body}"
    if status == 200:
        assert route.answer is not None, f"{route} answered 200 without a model for it: {body}"
        assert route.answer(body), f"{route}: 200 body of the wrong shape: {body}"
    else:
        assert 400 <= status < 500 and isinstance(body, dict), f"{route}: {status} {body}"
        assert ERROR_SHAPES[route.api](body), f"{route}: not {route.api}'s error shape: {body}"


def test_every_post_route_is_fuzzed(server):
    """The table holds every POST route the app serves: a new one is fuzzed from its first day."""
    served = {r.path for r in server.app.routes if "POST" in (getattr(r, "methods", None) or ())}
    deployment = f"/openai/deployments/{MODEL}/"
    fuzzed = {
        route.path.split("?")[0].replace(deployment, "/openai/deployments/{deployment:str}/")
        for route in ROUTES
    }
    assert served == fuzzed


# A few examples per route (this runs in every CI); each run draws new ones.
FEW = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
BODIES = {route.path: route_bodies(route) for route in ROUTES}


@pytest.mark.parametrize("route", ROUTES, ids=str)
@FEW
@given(data=st.data())
def test_route_structured_bodies(http, route, data):
    raw = data.draw(BODIES[route.path], label="body")
    headers = data.draw(admission_headers, label="headers")
    check_route(route, http.post(route.path, content=raw, headers=headers))


@pytest.mark.parametrize("route", ROUTES, ids=str)
@settings(FEW, max_examples=8)
@given(raw=st.binary(max_size=48) | json_values.map(msgspec.json.encode))
def test_route_arbitrary_bytes(http, route, raw):
    check_route(route, http.post(route.path, content=raw))


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,
        b'{"FIELD":' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"FIELD": "\\ud800"}',
        b'{"FIELD": "a", "dimensions": 1e999}',
    ],
    ids=["open arrays", "deep arrays", "lone surrogate", "number overflow"],
)
@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_pathological_json(http, route, raw):
    """Each is refused in the route's shape, in the route's first field (`FIELD`): a 400.
    TEI's serde_json calls all four syntax errors (nesting past its 128 levels, a number out of
    range, a lone surrogate), 400; a TEI route whose body is a typed struct may answer 422
    instead, TEI's status for JSON of the wrong shape (TEI_STATUSES in test_adapters.py): msgspec
    finds the wrong type (or the number too large for it) before any depth limit."""
    field = next(iter(route.required)).encode()
    response = http.post(route.path, content=raw.replace(b"FIELD", field))
    typed = route.api == "tei" and b"\\ud800" not in raw
    assert response.status_code in ((400, 422) if typed else (400,)), response.text
    check_route(route, response)
