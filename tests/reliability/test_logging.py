"""Problem 7: the access log showed no 499 for a client that hung up (the README said it would),
and a key sent in a query string was written to it verbatim. Keys from a file or the
environment stay out of `ps`."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from ..server.conftest import RawRequest, wait_for
from .conftest import MODEL, cli_server, queued_inputs

SECRET = "sk-secret-from-a-file"


def wait_for_log(server, text: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while text not in server.log():
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.05)
    return server.log()


def test_keys_from_a_file_query_keys_redacted_and_499_logged(tmp_path: Path):
    key_file = tmp_path / "keys"
    key_file.write_text(f"# one key a line\n{SECRET}\n")
    with cli_server(tmp_path, "--api-key-file", str(key_file), "--log-level", "info") as server:
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
        assert SECRET.encode() not in cmdline

        headers = {"Authorization": f"Bearer {SECRET}"}
        ok = httpx.post(
            server.url + "/v1/embeddings",
            headers=headers,
            json={"model": MODEL, "input": "a"},
            timeout=30,
        )
        assert ok.status_code == 200, ok.text

        leaked = "sk-typed-into-a-url"
        refused = httpx.post(
            server.url + f"/v1/embeddings?api-key={leaked}&x=1",
            json={"model": MODEL, "input": "a"},
            timeout=30,
        )
        assert refused.status_code == 401
        log = wait_for_log(server, "api-key=REDACTED&x=REDACTED")
        assert leaked not in log and SECRET not in log

        # The client hangs up while its inputs wait in the queue: the log says 499.
        texts = ["a client that will not wait for these many long texts to be embedded"] * 2048
        body = {"model": MODEL, "input": texts}
        request = RawRequest(server.url, "/v1/embeddings", body, headers)
        wait_for(lambda: queued_inputs(server.url) > 0)
        request.hang_up()
        log = wait_for_log(server, '"POST /v1/embeddings HTTP/1.1" 499')
        assert SECRET not in log


# A query string as a client might send it -> what the access log may show of it. Every value is
# hidden whatever its parameter is called; a name is kept only when it plainly is one.
QUERIES = {
    "sk=sk-query-secret-1": "sk=REDACTED",
    "jwt=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJxIn0.query-secret-2": "jwt=REDACTED",
    "session=query-secret-3&x=1": "session=REDACTED&x=REDACTED",
    "api-key%3Dsk-query-secret-4": "REDACTED",  # an encoded `=`: no name to keep
    "sk-query-secret-5": "REDACTED",  # a pair with no `=` at all
    "a%3Dsk-query-secret-6=1;b=query-secret-7": "REDACTED=REDACTED",  # encoded name, `;`
}


def test_query_string_values_never_reach_the_access_log(tmp_path: Path):
    with cli_server(tmp_path, "--api-key", SECRET, "--log-level", "info") as server:
        headers = {"Authorization": f"Bearer {SECRET}"}
        for query, shown in QUERIES.items():
            response = httpx.post(
                f"{server.url}/v1/embeddings?{query}",
                headers=headers,
                json={"model": MODEL, "input": "a"},
                timeout=30,
            )
            assert response.status_code == 200, response.text
            wait_for_log(server, f'"POST /v1/embeddings?{shown} HTTP/1.1" 200')

        # The 499 line for a client that hung up is written by us, not uvicorn: hidden as well.
        # It hangs up once its inputs are queued (a client timeout would race the model).
        texts = ["a client that will not wait for these many long texts to be embedded"] * 2048
        request = RawRequest(
            server.url,
            "/v1/embeddings?session=query-secret-8&api-version=2024-10-21",
            {"model": MODEL, "input": texts},
            headers,
        )
        wait_for(lambda: queued_inputs(server.url) > 0)
        request.hang_up()
        log = wait_for_log(
            server, '"POST /v1/embeddings?session=REDACTED&api-version=REDACTED HTTP/1.1" 499'
        )
    assert "query-secret" not in log and SECRET not in log
