"""/openapi.json describes what the server does: schemathesis generates requests from it (a
bounded number per operation) against the live server, and every response must be a documented
status with a body that fits its schema, and none a server error."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from embedserve.server.config import Limits
from embedserve.server.openapi import OPERATIONS, OpenAIEmbeddingsRequest, build_document
from embedserve.server.schemas import EXTENSION_FIELDS, STANDARD_FIELDS
from hypothesis import HealthCheck, given, settings

from tests.server.conftest import MODEL, LiveServer, live_server, unhurried

EXAMPLES = 12


@pytest.fixture(scope="module")
def fuzz_server(engine) -> Iterator[LiveServer]:
    # Small limits keep generated requests cheap; the limits' own errors are documented 400s.
    limits = Limits(max_inputs=8, max_request_tokens=4096)
    with live_server(unhurried(limits=limits), engines={MODEL: engine}) as live:
        yield live


def test_openai_struct_lists_the_fields_the_parser_accepts():
    assert set(OpenAIEmbeddingsRequest.__struct_fields__) == STANDARD_FIELDS | EXTENSION_FIELDS


def test_document_is_served_and_names_every_operation(fuzz_server):
    served = httpx.get(fuzz_server.url + "/openapi.json").json()
    assert served == build_document()
    assert {(m, p) for p, ms in served["paths"].items() for m in ms} == {
        (op.method, op.path) for op in OPERATIONS
    }
    page = httpx.get(fuzz_server.url + "/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "POST /v2/embed" in page.text and "/openapi.json" in page.text


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: f"{op.method} {op.path}")
def test_schemathesis_finds_no_server_error_and_no_schema_violation(fuzz_server, operation):
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_dict(build_document())
    api_operation = schema[operation.path][operation.method.upper()]
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=api_operation.as_strategy())
    def run(case) -> None:
        response = case.call(base_url=fuzz_server.url, timeout=30)
        case.validate_response(response, checks=checks)

    run()
