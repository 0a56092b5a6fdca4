"""/openapi.json describes what the server does: every route the app answers is in it (compared with
the app's own route table), each guarded route asks for a key and answers 401 without one, and
schemathesis generates requests from it (a bounded number per operation, with the key, naming the
served models most of the time) against a live server with an embedder and a reranker: every
response must be a documented status with a body and headers that fit their schemas, and none a
server error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest
from embedserve.reranker import Reranker
from embedserve.server.adapters import classify
from embedserve.server.adapters.rerank_schemas import COHERE_FIELDS, SCORE_FIELDS, TEI_FIELDS
from embedserve.server.app import create_app
from embedserve.server.auth import require_api_key
from embedserve.server.config import Limits, ModelSpec, ServerConfig
from embedserve.server.openapi import (
    OPERATIONS,
    AzureEmbeddingsRequest,
    CohereRerankRequest,
    OpenAIEmbeddingsRequest,
    ScoreRequest,
    TeiRerankRequest,
    build_document,
)
from embedserve.server.schemas import EXTENSION_FIELDS, STANDARD_FIELDS
from embedserve.server.shapes import ERROR_BODIES, api_for_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..support import cross_encoders
from .conftest import KEY, MODEL, LiveServer, live_server, unhurried

EXAMPLES = 14
NEGATIVE_EXAMPLES = 6
RERANKER = "reranker"
BODY_LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def reranker(tmp_path_factory, minilm_dir) -> Reranker:
    folder = cross_encoders.bert_cross_encoder(tmp_path_factory.mktemp("reranker"), minilm_dir)
    return Reranker.from_pretrained(folder, name=RERANKER)


@pytest.fixture(scope="module")
def fuzz_server(engine, reranker) -> Iterator[LiveServer]:
    # Small limits keep generated requests cheap; the limits' own errors are documented 400s.
    config = unhurried(
        models=(ModelSpec(MODEL), ModelSpec(RERANKER, RERANKER)),
        api_keys=(KEY,),
        limits=Limits(
            max_inputs=8, max_documents=8, max_request_tokens=4096, max_body_bytes=BODY_LIMIT
        ),
    )
    with live_server(config, engines={MODEL: engine, RERANKER: reranker}) as live:
        yield live


# -- the document against the code --


@pytest.mark.parametrize(
    ("struct", "fields"),
    [
        (OpenAIEmbeddingsRequest, STANDARD_FIELDS | EXTENSION_FIELDS),
        (AzureEmbeddingsRequest, STANDARD_FIELDS | EXTENSION_FIELDS),
        (CohereRerankRequest, COHERE_FIELDS),
        (TeiRerankRequest, TEI_FIELDS),
        (ScoreRequest, SCORE_FIELDS),
        (classify.PredictRequest, classify.PREDICT_FIELDS),
        (classify.PredictParameters, classify.PARAMETER_FIELDS),
        (classify.ClassifyRequest, classify.CLASSIFY_FIELDS),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_structs_list_the_fields_the_hand_parsers_accept(struct, fields):
    assert set(struct.__struct_fields__) == fields


def test_every_route_of_the_app_is_documented_with_its_key():
    """The app's route table (Litestar's automatic OPTIONS aside) is the document's operations,
    and a route asks for a key in the document exactly when the app checks one."""
    app = create_app(ServerConfig())
    guarded: dict[tuple[str, str], bool] = {}
    for route in app.routes:
        for handler in route.route_handlers:  # type: ignore[union-attr]
            for method in handler.http_methods - {"OPTIONS"}:
                key = (method.lower(), route.path_format)
                guarded[key] = handler.before_request is require_api_key
    document = build_document()
    documented = {
        (method, path): bool(op["security"])
        for path, methods in document["paths"].items()
        for method, op in methods.items()
    }
    assert documented == guarded
    for methods in document["paths"].values():
        for op in methods.values():
            assert {} not in op["security"]
            assert ("401" in op["responses"]) == bool(op["security"])


def test_each_operation_documents_the_error_body_its_path_sends():
    """The document's error shapes come from the same table the error handlers read."""
    for op in OPERATIONS:
        if op.error is not None:
            assert op.error is ERROR_BODIES[api_for_path(op.path)], (op.method, op.path)


def test_without_keys_the_key_is_optional_and_no_route_answers_401():
    document = build_document(api_keys=False)
    for methods in document["paths"].values():
        for op in methods.values():
            assert "401" not in op["responses"]
            assert op["security"] in ([], [{"bearer": []}, {"api-key": []}, {}])


def test_api_version_is_declared_where_azure_routes_read_it():
    document = build_document()
    declared = {
        path
        for path, methods in document["paths"].items()
        for op in methods.values()
        if any(p["name"] == "api-version" for p in op.get("parameters", []))
    }
    assert declared == {
        "/embeddings",
        "/models/embeddings",
        "/openai/deployments/{deployment}/embeddings",
        "/models/info",
        "/info",
    }
    pattern = document["paths"]["/models/info"]["get"]["parameters"][0]["schema"]
    for good in ("v1", "preview", "2024-05-01", "2024-05-01-preview"):
        jsonschema.validate(good, pattern)
    for bad in ("", "v2", "2024-5-1", "2024-05-01-beta", "latest"):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, pattern)


# -- the document against the live server --


def test_document_is_served_and_names_every_operation(fuzz_server):
    served = httpx.get(fuzz_server.url + "/openapi.json").json()
    assert served == build_document(api_keys=True)
    page = httpx.get(fuzz_server.url + "/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for text in ("POST /v2/embed", "POST /v1/rerank", "GET /ready", "/openapi.json"):
        assert text in page.text


def test_a_server_without_keys_serves_the_document_without_them(engine):
    with live_server(ServerConfig(), engines={MODEL: engine}) as live:
        served = httpx.get(live.url + "/openapi.json").json()
    assert served == build_document(api_keys=False)


def _route_case(op: Any) -> Any:
    return pytest.param(op, id=f"{op.method} {op.path}")


def _url(server: LiveServer, path: str) -> str:
    return server.url + path.format(deployment=MODEL, model_id=MODEL)


def _error_schema(document: dict[str, Any], op: Any, status: int) -> dict[str, Any]:
    schema = document["paths"][op.path][op.method]["responses"][str(status)]["content"]
    return {**schema["application/json"]["schema"], "components": document["components"]}


@pytest.mark.parametrize("op", [_route_case(op) for op in OPERATIONS])
def test_each_route_asks_for_a_key_as_documented_and_refuses_in_its_shape(fuzz_server, op):
    """Without a key (or with a wrong one) a guarded route answers the documented 401; with the
    key in either header it lets the request through; an unguarded route never asks."""
    document = build_document()
    url = _url(fuzz_server, op.path)
    body = {} if op.method == "post" else None
    with httpx.Client(timeout=30) as client:
        missing = client.request(op.method, url, json=body)
        wrong_api_key = client.request(op.method, url, json=body, headers={"api-key": "wrong"})
        wrong_bearer = client.request(
            op.method, url, json=body, headers={"Authorization": "Bearer wrong"}
        )
        bearer = client.request(
            op.method, url, json=body, headers={"Authorization": f"Bearer {KEY}"}
        )
        api_key = client.request(op.method, url, json=body, headers={"api-key": KEY})
    if not op.guarded:
        assert missing.status_code == 200
        return
    for refused in (missing, wrong_api_key, wrong_bearer):
        assert refused.status_code == 401, refused.text
        assert refused.headers["www-authenticate"] == "Bearer"
        jsonschema.validate(refused.json(), _error_schema(document, op, 401))
    assert bearer.status_code != 401 and api_key.status_code != 401
    assert bearer.status_code == api_key.status_code
    if bearer.status_code >= 400:  # an empty body: the route's own 400, in its shape
        jsonschema.validate(bearer.json(), _error_schema(document, op, bearer.status_code))


@pytest.mark.parametrize("op", [_route_case(op) for op in OPERATIONS if op.request is not None])
def test_a_body_over_the_limit_gets_the_documented_413(fuzz_server, op):
    body = b'{"input": "' + b"a" * BODY_LIMIT + b'"}'
    response = httpx.post(
        _url(fuzz_server, op.path),
        content=body,
        headers={"Authorization": f"Bearer {KEY}", "content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413, response.text
    jsonschema.validate(response.json(), _error_schema(build_document(), op, 413))


def _fuzz_cases() -> list[Any]:
    """Every operation with valid requests; those with a body or a constrained parameter with
    invalid ones too (each must be refused in the route's own error shape)."""
    return [
        pytest.param(op, mode, id=f"{op.method} {op.path} {mode}")
        for op in OPERATIONS
        for mode in ("positive", "negative")
        if mode == "positive" or op.request is not None or any(_constrained(p) for p in op.params)
    ]


def _constrained(param: Any) -> bool:
    """Whether a parameter has values that are invalid (a bare string has none)."""
    return bool({"pattern", "enum"} & param.schema.keys())


@pytest.mark.parametrize(("op", "mode"), _fuzz_cases())
def test_schemathesis_finds_no_server_error_and_no_schema_violation(fuzz_server, op, mode):
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_dict(build_document())
    # The key is given below; generated `api-key` values would only add noise to it.
    schema.config.generation.update(with_security_parameters=False)
    api_operation = schema[op.path][op.method.upper()]
    checks = [not_a_server_error, status_code_conformance, content_type_conformance]
    checks += [response_headers_conformance]
    positive = mode == "positive"
    strategy = api_operation.as_strategy(
        GenerationMode.POSITIVE if positive else GenerationMode.NEGATIVE,
        headers={"Authorization": f"Bearer {KEY}"},
    )
    # Random model names only ever find the 404: name the model that serves the route, or the
    # other kind (a 400), in most valid requests.
    fits = RERANKER if "rerank" in op.path or "score" in op.path else MODEL
    other = MODEL if fits == RERANKER else RERANKER
    names = st.sampled_from([None, fits, fits, other] if positive else [None])

    @settings(
        max_examples=EXAMPLES if positive else NEGATIVE_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, name=names)
    def run(case, name) -> None:
        _name_a_served_model(case, name)
        response = case.call(base_url=fuzz_server.url, timeout=30)
        case.validate_response(response, checks=checks)
        case.validate_response(response, checks=[response_schema_conformance])

    run()


def _name_a_served_model(case: Any, name: str | None) -> None:
    """Put `name` wherever the case names a model: the body, the path, the query."""
    if name is None:
        return
    if isinstance(case.body, dict) and "model" in case.body:
        case.body["model"] = name
    for field in ("deployment", "model_id"):
        if case.path_parameters and field in case.path_parameters:
            case.path_parameters[field] = name
    if case.query and "model" in case.query:
        case.query["model"] = name
