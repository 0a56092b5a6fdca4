"""Problem 2 (a 16 MB body of commas tokenized in full: ~1.9 GB peak, 3.6 GB for three at once)
and the memory side of problem 6 (aborted uploads left ~950 MB resident; not reproduced on the
current code, kept as a guard). Memory is read from /proc/PID/status of a real
`embedserve serve` process."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor

from .conftest import MODEL, cli_server, embed, error_of

COMMAS = json.dumps({"model": MODEL, "input": ["," * 8000] * 2048}).encode()  # 15.6 MiB
MB = 1024


def warm(url: str) -> None:
    assert embed(url, {"model": MODEL, "input": ["warm up"] * 8}).status_code == 200


def test_commas_are_refused_on_characters_before_tokenizing(tmp_path):
    with cli_server(tmp_path) as server:
        warm(server.url)
        before = server.hwm_kb()
        with ThreadPoolExecutor(3) as pool:
            responses = list(pool.map(lambda _: embed(server.url, COMMAS), range(3)))
        for response in responses:
            error = error_of(response, 400, "too_many_tokens")
            assert "16384000 characters" in error["message"]
        # Three bodies and their decoded texts: well under 200 MB (it was +3.4 GB).
        assert server.hwm_kb() - before < 200 * MB


def test_tokenizing_stops_once_the_request_passes_its_token_limit(tmp_path):
    # Lift the character limit so the request reaches the tokenizer: the token limit must then
    # stop it after a few chunks, not after 16 M tokens.
    with cli_server(tmp_path, "--max-request-chars", "100000000") as server:
        warm(server.url)
        before = server.hwm_kb()
        error = error_of(embed(server.url, COMMAS), 400, "too_many_tokens")
        assert error["message"].startswith("the first 40 inputs already hold")
        assert server.hwm_kb() - before < 150 * MB
        # A refused request is freed at once, not at the next full garbage collection (a
        # reference cycle kept each one's body and texts: +32 MB a request).
        settled = server.rss_kb()
        for _ in range(5):
            error_of(embed(server.url, COMMAS), 400, "too_many_tokens")
        assert server.rss_kb() - settled < 64 * MB


def test_aborted_uploads_leave_no_memory_behind(tmp_path):
    with cli_server(tmp_path) as server:
        warm(server.url)
        before = server.rss_kb()
        chunk = b"x" * (256 * 1024)

        def abort_upload(_: int) -> None:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(
                    b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
                    b"\r\ncontent-length: 2000000\r\n\r\n"
                )
                for _ in range(6):  # 1.5 MB of the 2 MB announced, then hang up
                    sock.sendall(chunk)

        with ThreadPoolExecutor(20) as pool:
            list(pool.map(abort_upload, range(200)))
        warm(server.url)  # the server still answers
        assert server.rss_kb() - before < 100 * MB  # it was ~+750 MB
