"""Every error a client can cause, over real HTTP: status, exact body shape, type/code/param."""

from __future__ import annotations

import json

import httpx
import pytest
from embedserve.server.config import Limits

from .conftest import KEY, MODEL, auth, live_server, metric_samples, unhurried

ERROR_KEYS = {"message", "type", "param", "code"}


def post(server, body, *, path="/v1/embeddings", headers=None, **kwargs) -> httpx.Response:
    headers = auth() if headers is None else headers
    if isinstance(body, (bytes, str)):
        return httpx.post(
            server.url + path,
            content=body,
            headers={**headers, "Content-Type": "application/json"},
            **kwargs,
        )
    return httpx.post(server.url + path, json=body, headers=headers, **kwargs)


def error_of(
    response: httpx.Response,
    status: int,
    *,
    type: str = "invalid_request_error",
    code: str | None,
    param: str | None,
) -> dict:
    """Assert the response is exactly an OpenAI error with these fields; return its `error`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == ERROR_KEYS
    assert isinstance(error["message"], str) and error["message"]
    assert (error["type"], error["code"], error["param"]) == (type, code, param)
    return error


@pytest.fixture(scope="module")
def small(engine):
    """A server with tight limits so each one is cheap to hit."""
    limits = Limits(max_inputs=4, max_input_tokens=40, max_request_tokens=60, max_body_bytes=2000)
    config = unhurried(api_keys=(KEY,), auto_truncate=True, limits=limits)
    with live_server(config, engines={MODEL: engine}) as live:
        yield live


# -- the success shape, exactly --


def test_success_body_has_exactly_the_openai_shape(server):
    response = post(server, {"model": MODEL, "input": ["one", "two three"]})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["object", "data", "model", "usage"]
    assert body["object"] == "list" and body["model"] == MODEL
    assert body["usage"] == {"prompt_tokens": 3 + 4, "total_tokens": 3 + 4}
    for index, item in enumerate(body["data"]):
        assert list(item) == ["object", "index", "embedding"]
        assert item["object"] == "embedding" and item["index"] == index
        assert len(item["embedding"]) == 384 and all(
            isinstance(x, float) for x in item["embedding"]
        )
    for header in ("x-tokenization-time", "x-queue-time", "x-inference-time", "x-total-time"):
        assert float(response.headers[header]) >= 0


# -- malformed requests --


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (b"{", None, "invalid_json"),
        (b"", None, "invalid_json"),
        (b"\xff\xfe", None, "invalid_json"),
        (b"[1, 2]", None, "invalid_json"),
        (b'"text"', None, "invalid_json"),
        ({"model": MODEL}, "input", "missing_required_parameter"),
        ({"model": MODEL, "input": None}, "input", "missing_required_parameter"),
        ({"model": MODEL, "input": 5}, "input", "invalid_type"),
        ({"model": MODEL, "input": {"a": 1}}, "input", "invalid_type"),
        ({"model": MODEL, "input": ["a", 1]}, "input", "invalid_type"),
        ({"model": MODEL, "input": [[1, 2], "a"]}, "input", "invalid_type"),
        ({"model": MODEL, "input": [[1, 2.5]]}, "input", "invalid_type"),
        ({"model": MODEL, "input": [1, True]}, "input", "invalid_type"),
        ({"model": 7, "input": "a"}, "model", "invalid_type"),
        ({"input": "a"}, "model", "missing_required_parameter"),
        (
            {"model": MODEL, "input": "a", "encoding_format": "float16"},
            "encoding_format",
            "invalid_value",
        ),
        ({"model": MODEL, "input": "a", "encoding_format": ""}, "encoding_format", "invalid_value"),
        (
            {"model": MODEL, "input": "a", "truncation_direction": ""},
            "truncation_direction",
            "invalid_value",
        ),
        ({"model": MODEL, "input": "a", "encoding_format": 1}, "encoding_format", "invalid_type"),
        ({"model": MODEL, "input": "a", "dimensions": "8"}, "dimensions", "invalid_type"),
        ({"model": MODEL, "input": "a", "dimensions": 8.0}, "dimensions", "invalid_type"),
        ({"model": MODEL, "input": "a", "dimensions": True}, "dimensions", "invalid_type"),
        ({"model": MODEL, "input": "a", "user": 1}, "user", "invalid_type"),
        ({"model": MODEL, "input": "a", "metadata": ["x"]}, "metadata", "invalid_type"),
        ({"model": MODEL, "input": "a", "metadata": {"k": 1}}, "metadata", "invalid_type"),
        ({"model": MODEL, "input": "a", "input_type": "passage"}, "input_type", "invalid_value"),
        ({"model": MODEL, "input": "a", "truncate": "no"}, "truncate", "invalid_type"),
        ({"model": MODEL, "input": "a", "normalize": 0}, "normalize", "invalid_type"),
        (
            {"model": MODEL, "input": "a", "truncation_direction": "middle"},
            "truncation_direction",
            "invalid_value",
        ),
        ({"model": MODEL, "input": "a", "prompt_name": "passage"}, "prompt_name", "invalid_input"),
        ({"model": MODEL, "input": "a", "extra_body": []}, "extra_body", "invalid_type"),
        ({"model": MODEL, "input": "a", "temperature": 1}, "temperature", "unknown_parameter"),
        ({"model": MODEL, "input": "a", "extra_body": {"top_k": 1}}, "top_k", "unknown_parameter"),
    ],
)
def test_malformed_requests_are_400_naming_the_field(server, body, param, code):
    error_of(post(server, body), 400, code=code, param=param)


@pytest.mark.parametrize(
    ("body", "index", "code"),
    [
        ({"model": MODEL, "input": []}, None, "empty_input"),
        ({"model": MODEL, "input": ""}, 0, "empty_input"),
        ({"model": MODEL, "input": ["a", ""]}, 1, "empty_input"),
        ({"model": MODEL, "input": [[1, 2], []]}, 1, "empty_input"),
        ({"model": MODEL, "input": [[]]}, 0, "empty_input"),
        # Token arrays are cl100k_base ids by default: 100256 is a hole in that encoding.
        ({"model": MODEL, "input": [[5, 7], [1, 100256]]}, 1, "invalid_token_id"),
        ({"model": MODEL, "input": [-1]}, 0, "invalid_token_id"),
        (
            {"model": MODEL, "input": ["ok", "word " * 300], "truncate": False},
            1,
            "context_length_exceeded",
        ),
    ],
)
def test_bad_inputs_are_400_naming_the_input_index(server, body, index, code):
    error = error_of(post(server, body), 400, code=code, param="input")
    if index is not None:
        assert f"input[{index}]" in error["message"]


def test_truncate_false_also_works_inside_extra_body(server):
    long = "word " * 300
    assert post(server, {"model": MODEL, "input": long}).status_code == 200  # auto-truncate is on
    error_of(
        post(server, {"model": MODEL, "input": long, "extra_body": {"truncate": False}}),
        400,
        code="context_length_exceeded",
        param="input",
    )


def test_dimensions_are_refused_for_a_model_not_trained_for_them(server):
    error = error_of(
        post(server, {"model": MODEL, "input": "a", "dimensions": 64}),
        400,
        code="unsupported_parameter",
        param="dimensions",
    )
    assert "--allow-dimensions" in error["message"]


@pytest.mark.parametrize(
    "metadata",
    [
        {f"k{i}": "v" for i in range(17)},
        {"k" * 65: "v"},
        {"k": "v" * 513},
    ],
)
def test_metadata_over_openai_limits_is_400(server, metadata):
    error_of(
        post(server, {"model": MODEL, "input": "a", "metadata": metadata}),
        400,
        code="invalid_value",
        param="metadata",
    )


def test_metadata_and_user_within_limits_are_accepted(server):
    metadata = {f"k{i}": "v" * 512 for i in range(16)}
    assert (
        post(server, {"model": MODEL, "input": "a", "user": "u1", "metadata": metadata}).status_code
        == 200
    )


# -- limits --


def test_too_many_inputs(small):
    error_of(
        post(small, {"model": MODEL, "input": ["a"] * 5}),
        400,
        code="too_many_inputs",
        param="input",
    )
    assert post(small, {"model": MODEL, "input": ["a"] * 4}).status_code == 200


def test_too_many_tokens_in_one_input_even_with_truncation(small):
    error = error_of(
        post(small, {"model": MODEL, "input": ["a", "word " * 45]}),
        400,
        code="context_length_exceeded",
        param="input",
    )
    assert "input[1]" in error["message"]


def test_too_many_tokens_in_one_request(small):
    error_of(
        post(small, {"model": MODEL, "input": ["word " * 30, "word " * 30]}),
        400,
        code="too_many_tokens",
        param="input",
    )


def test_too_many_ids_are_refused_from_the_body_bytes_before_decoding(small):
    """Token arrays are counted from the bytes of `input` (or `extra_body.input`) before the
    body is decoded: the message is that early count's ("at least"), not the exact count after
    decoding; commas in other fields or in texts count for nothing."""
    arrays = [[7] * 38] * 4  # each array within max_input_tokens, 152 ids against 60
    for body in (
        {"model": MODEL, "input": arrays},
        {"model": MODEL, "input": "a", "extra_body": {"input": arrays}},
    ):
        error = error_of(post(small, body), 400, code="too_many_tokens", param="input")
        assert error["message"].startswith("input holds at least"), error["message"]
    commas = {"model": MODEL, "input": ["a", "b"], "user": "," * 500}
    assert post(small, commas).status_code == 200


def test_body_over_the_cap_is_413(small):
    body = json.dumps({"model": MODEL, "input": "x" * 3000})
    error = error_of(post(small, body), 413, code="request_too_large", param=None)
    assert "2000" in error["message"]


def test_body_over_the_cap_without_content_length_is_413(small):
    def chunks():
        for _ in range(10):
            yield b" " * 500

    response = httpx.post(small.url + "/v1/embeddings", content=chunks(), headers=auth())
    error_of(response, 413, code="request_too_large", param=None)


# -- models, deployments, api-version, extra-parameters --


def test_unknown_model_is_404_model_not_found(server):
    error_of(
        post(server, {"model": "gpt-4", "input": "a"}), 404, code="model_not_found", param="model"
    )


def test_unknown_deployment_is_404(server):
    error_of(
        post(
            server,
            {"input": "a"},
            path="/openai/deployments/nope/embeddings?api-version=2024-02-01",
        ),
        404,
        code="DeploymentNotFound",
        param=None,
    )


@pytest.mark.parametrize(
    "version",
    [
        *("2024-05", "v2", "latest", "2024-05-01-beta", ""),
        *("2024-13-45", "2023-02-29", "2024-00-10", "2024-04-31-preview", "0000-01-01"),
    ],
)
def test_malformed_api_version_is_400(server, version):
    error_of(
        post(server, {"input": "a"}, path=f"/embeddings?api-version={version}"),
        400,
        code="invalid_api_version",
        param="api-version",
    )


@pytest.mark.parametrize(
    "version", ["v1", "preview", "2024-05-01-preview", "2024-10-21", "2024-02-29"]
)
def test_azure_api_versions_are_accepted(server, version):
    response = post(server, {"input": "a"}, path=f"/models/embeddings?api-version={version}")
    assert response.status_code == 200 and response.json()["model"] == MODEL


def test_extra_parameters_header(server):
    body = {"input": "a", "foo": 1}
    path = "/embeddings?api-version=2024-05-01-preview"
    error_of(post(server, body, path=path), 400, code="unknown_parameter", param="foo")
    error_of(
        post(server, body, path=path, headers={**auth(), "extra-parameters": "error"}),
        400,
        code="unknown_parameter",
        param="foo",
    )
    for policy in ("drop", "pass-through"):
        assert (
            post(
                server, body, path=path, headers={**auth(), "extra-parameters": policy}
            ).status_code
            == 200
        )
    error_of(
        post(server, body, path=path, headers={**auth(), "extra-parameters": "keep"}),
        400,
        code="invalid_value",
        param="extra-parameters",
    )


def test_without_api_version_root_embeddings_is_openai_and_needs_a_model(server):
    error_of(
        post(server, {"input": "a"}, path="/embeddings"),
        400,
        code="missing_required_parameter",
        param="model",
    )
    assert post(server, {"input": "a"}, path="/embeddings?api-version=v1").status_code == 200


# -- routing --


def test_unknown_route_is_openai_shaped_404(server):
    error = error_of(httpx.get(server.url + "/v2/whatever"), 404, code="unknown_url", param=None)
    assert "/v2/whatever" in error["message"]
    error_of(
        httpx.post(server.url + "/v1/embeddingz", json={}), 404, code="unknown_url", param=None
    )


def test_wrong_method_is_openai_shaped_405(server):
    response = httpx.get(server.url + "/v1/embeddings", headers=auth())
    error_of(response, 405, code="method_not_allowed", param=None)
    assert "POST" in response.headers["allow"]
    error_of(httpx.delete(server.url + "/health"), 405, code="method_not_allowed", param=None)


def test_metrics_count_a_405_under_its_route_and_every_unknown_path_as_unmatched(server):
    """A wrong method on a known path is an answer of that route, labelled with its template;
    unknown paths share one label, so a client's random paths cannot add series to /metrics."""
    httpx.get(server.url + "/v1/embeddings", headers=auth())
    httpx.delete(server.url + "/v1/models/some/model", headers=auth())
    for n in range(3):
        assert httpx.get(server.url + f"/random-{n}").status_code == 404
    text = httpx.get(server.url + "/metrics").text
    requests = metric_samples(text, "embedserve_requests_total")
    for method, route in [("GET", "/v1/embeddings"), ("DELETE", "/v1/models/{model_id}")]:
        assert f'embedserve_requests_total{{method="{method}",route="{route}",status="405"}}' in (
            requests
        ), requests
    assert 'embedserve_requests_total{method="GET",route="unmatched",status="404"}' in requests
    assert not [key for key in requests if 'route="unmatched",status="405"' in key]
    assert "random" not in text


def test_metrics_count_a_method_no_route_takes_as_other(server):
    """httptools refuses a method it does not know, but an ASGI server with h11 passes any
    token on (`BREW /x`): each made a `method` label of its own, series a client could add at
    will. A method outside HTTP's few is counted as "other"."""
    import asyncio

    async def brew() -> list[int]:
        transport = httpx.ASGITransport(app=server.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [(await client.request(m, "/v1/embeddings")).status_code for m in ("BREW", "X1")]

    assert asyncio.run(brew()) == [405, 405]
    text = httpx.get(server.url + "/metrics").text
    assert "BREW" not in text and "X1" not in text
    requests = metric_samples(text, "embedserve_requests_total")
    other = 'embedserve_requests_total{method="other",route="/v1/embeddings",status="405"}'
    assert requests[other] == 2.0, requests


# -- auth --


@pytest.mark.parametrize(
    "path",
    [
        "/v1/embeddings",
        "/embeddings",
        "/models/embeddings",
        "/openai/deployments/all-MiniLM-L6-v2/embeddings",
    ],
)
def test_missing_key_is_401(server, path):
    error_of(
        post(server, {"model": MODEL, "input": "a"}, path=path, headers={}),
        401,
        code="missing_api_key",
        param=None,
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer wrong"},
        {"api-key": "wrong"},
        {"Authorization": "Basic " + KEY},
        {"Authorization": "Bearer " + KEY[:-1]},
        {"Authorization": "Bearer " + KEY + "x"},
    ],
)
def test_wrong_key_is_401(server, headers):
    response = post(server, {"model": MODEL, "input": "a"}, headers=headers)
    code = (
        "missing_api_key"
        if headers.get("Authorization", "").startswith("Basic")
        else "invalid_api_key"
    )
    error_of(response, 401, code=code, param=None)
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer " + KEY},
        {"authorization": "bearer " + KEY},
        {"api-key": KEY},
        {"api-key": KEY, "Authorization": "Bearer " + KEY},  # what the Azure SDKs send
        {"api-key": KEY, "Authorization": "Bearer something-else"},
    ],
)
def test_right_key_in_each_header_form(server, headers):
    assert post(server, {"model": MODEL, "input": "a"}, headers=headers).status_code == 200


def test_model_and_info_routes_need_the_key(server):
    for path in ("/v1/models", "/models", f"/v1/models/{MODEL}", "/models/info"):
        error_of(httpx.get(server.url + path), 401, code="missing_api_key", param=None)
        assert httpx.get(server.url + path, headers=auth()).status_code == 200
    # GET /info is TEI's route (Azure's with api-version), so its errors have TEI's shape.
    missing = httpx.get(server.url + "/info")
    assert missing.status_code == 401 and missing.json()["error_type"] == "Validation"
    assert httpx.get(server.url + "/info", headers=auth()).status_code == 200


def test_probes_and_metrics_need_no_key(server):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    assert httpx.get(server.url + "/ready").json() == {"status": "ready", "models": [MODEL]}
    assert httpx.get(server.url + "/metrics").status_code == 200


def test_several_keys_and_no_keys(engine):
    config = unhurried(api_keys=("k-one", "k-two"))
    with live_server(config, engines={MODEL: engine}) as live:
        for key in ("k-one", "k-two"):
            assert post(live, {"model": MODEL, "input": "a"}, headers=auth(key)).status_code == 200
        error_of(
            post(live, {"model": MODEL, "input": "a"}, headers=auth("k-three")),
            401,
            code="invalid_api_key",
            param=None,
        )
    with live_server(unhurried(), engines={MODEL: engine}) as open_server:
        assert post(open_server, {"model": MODEL, "input": "a"}, headers={}).status_code == 200


# -- the models list --


def test_models_list_is_openai_shaped(server):
    body = httpx.get(server.url + "/v1/models", headers=auth()).json()
    assert list(body) == ["object", "data"] and body["object"] == "list"
    (card,) = body["data"]
    assert list(card) == ["id", "object", "created", "owned_by"]
    assert (card["id"], card["object"], card["owned_by"]) == (MODEL, "model", "embedserve")
    assert isinstance(card["created"], int)
    assert httpx.get(server.url + "/models", headers=auth()).json() == body
    assert httpx.get(server.url + f"/v1/models/{MODEL}", headers=auth()).json() == card
    error_of(
        httpx.get(server.url + "/v1/models/nope", headers=auth()),
        404,
        code="model_not_found",
        param="model",
    )


def test_info_is_azure_model_info(server):
    expected = {
        "model_name": MODEL,
        "model_type": "embeddings",
        "model_provider_name": "embedserve",
    }
    assert (
        httpx.get(server.url + "/info?api-version=2024-05-01-preview", headers=auth()).json()
        == expected
    )
    assert httpx.get(server.url + "/models/info", headers=auth()).json() == expected


# -- exact snapshots --

SNAPSHOTS = [
    (
        {"model": "gpt-4", "input": "a"},
        auth(),
        404,
        {
            "message": "The model `gpt-4` does not exist.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        },
    ),
    (
        {"model": MODEL, "input": ["a", ""]},
        auth(),
        400,
        {
            "message": "input[1] is an empty string; every input must hold at least one token",
            "type": "invalid_request_error",
            "param": "input",
            "code": "empty_input",
        },
    ),
    (
        {"model": MODEL, "input": "a"},
        {"api-key": "nope"},
        401,
        {
            "message": "Incorrect API key provided.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        },
    ),
    (
        {"model": MODEL, "input": "a", "temperature": 0},
        auth(),
        400,
        {
            "message": "Unrecognized request argument supplied: temperature",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "unknown_parameter",
        },
    ),
]


@pytest.mark.parametrize(("body", "headers", "status", "error"), SNAPSHOTS)
def test_error_snapshots(server, body, headers, status, error):
    response = post(server, body, headers=headers)
    assert response.status_code == status
    assert response.json() == {"error": error}


def test_success_bytes_snapshot(server):
    # [15339, 1917] is "hello world" in cl100k_base: 2 model tokens plus [CLS] and [SEP].
    response = post(server, {"model": MODEL, "input": [[15339, 1917]], "encoding_format": "base64"})
    raw = response.content
    assert raw.startswith(b'{"object":"list","data":[{"object":"embedding","index":0,"embedding":"')
    assert raw.endswith(
        b'"}],"model":"all-MiniLM-L6-v2","usage":{"prompt_tokens":4,"total_tokens":4}}'
    )
