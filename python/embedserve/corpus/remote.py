"""`embedserve embed-file --server URL`: embed-file's model stage on a running server.

Everything but the model is the local run's (`pipeline.embed_file`): the file plan, the chunks
and bad rows, the parts, the manifest and the resume. Each chunk is one `POST /v1/embeddings`
(OpenAI's wire format, so any compatible server will do) sent with `X-Priority: batch`, asking
for `encoding_format: "base64"`: the server's exact float32 bytes, a third lighter than JSON
numbers. Other `embedding_type`s are made here from those floats by `quantization.quantize`,
the function the local run and the server use, so they are the same bytes and need no server
extension. A few requests are in flight at once; the chunks reach the writer in input order.

An answer of 429 or 503 is waited out (its `Retry-After`) and the same request sent again, for
at most `retry_seconds`; lost connections, timeouts and other 5xx answers are retried a few
times. A request refused as too large is sent again in smaller pieces (`Splitter`). Anything
else stops the job with the server's message and the rows it was sent: the parts already
written stay, and the same command resumes after them.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import re
import socket
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from embedserve._version import __version__
from embedserve.corpus.output import Chunk, at_part_ends
from embedserve.corpus.pipeline import (
    MODEL_SETTINGS,
    EmbedFileOptions,
    FileSlice,
    check_output,
    chunks_of,
    embed_file,
    input_row,
)
from embedserve.quantization import quantize

PRIORITY = {"X-Priority": "batch"}
# A refusal with no (or an unreadable) Retry-After is retried after this many seconds.
DEFAULT_RETRY_AFTER = 1.0
MIN_RETRY_AFTER = 0.1
# The manifest's precision, tokenizer and the other settings that decide the vectors
# (pipeline.MODEL_SETTINGS), for a server run: the server's, which the client cannot see. A local
# run and a server run never resume into each other, so no output mixes two precisions.
SERVER_SIDE = "server"
_PROBE = "embed-file probe"
# The 400 codes of a request too large as a whole (embedserve's per-request count, character and
# token limits), beside any 413: fewer texts a request may pass where these same texts did not.
# Read from the status and `error.code`, never the message, whose words are the server's own.
TOO_LARGE_CODES = frozenset({"too_many_inputs", "too_many_tokens"})


class ServerError(RuntimeError):
    """The server refused a request, failed, or could not be reached: the job stops (its
    written parts stay, and the same command resumes after them)."""


class TooLargeError(ServerError):
    """The server refused a request for its size (413, or a 400 of TOO_LARGE_CODES): the same
    texts may pass in smaller requests. It stops the job only for a single text."""


@dataclass(frozen=True)
class ServerOptions:
    """Where the server is and how patiently to talk to it."""

    url: str
    api_key: str | None = None
    concurrency: int = 2
    # How long one request may keep being refused (429/503 with Retry-After) before the job stops.
    retry_seconds: float = 600.0
    # Tries of one request through lost connections, timeouts and 5xx answers other than 503,
    # waiting backoff_seconds, then twice that, ... between them.
    tries: int = 5
    backoff_seconds: float = 1.0
    timeout: float = 300.0

    def __post_init__(self) -> None:
        embeddings_url(self.url)  # refused here, before any input is read
        if self.concurrency < 1 or self.tries < 1:
            raise ValueError("concurrency and tries must be at least 1")
        if self.retry_seconds < 0 or self.backoff_seconds < 0 or self.timeout <= 0:
            raise ValueError("retry_seconds and backoff_seconds must be >= 0, timeout > 0")


def embeddings_url(url: str) -> str:
    """The embeddings endpoint of a server given by its root (`http://host:8000`), by its
    OpenAI base URL (`http://host:8000/v1`, what OpenAI's SDK takes) or by the endpoint itself
    (copied from a curl line): `.../v1/embeddings`."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (read for its check: a port that is not a number, or too large)
    except ValueError as exc:  # urllib's words name neither the flag nor the URL
        raise ValueError(f"--server {url}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--server wants an http:// or https:// URL with a host, got {url!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/v1/embeddings"):
        path = path.removesuffix("/embeddings")
    if not path.endswith("/v1"):
        path += "/v1"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path + "/embeddings", "", ""))


class EmbeddingsClient:
    """`POST /v1/embeddings` over one keep-alive connection per thread (the standard library's
    http.client: no dependency beyond what embed-file already has)."""

    def __init__(self, options: ServerOptions, model: str, dimensions: int | None) -> None:
        self.options = options
        self.model = model
        self.dimensions = dimensions
        self.endpoint = embeddings_url(options.url)
        self._target = urllib.parse.urlsplit(self.endpoint)
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"embedserve-embed-file/{__version__}",
            **PRIORITY,
        }
        if options.api_key:
            self._headers["Authorization"] = f"Bearer {options.api_key}"
        self._local = threading.local()
        self._open: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # The width of the first answer (the probe's), which every later answer must have.
        self.width: int | None = None

    def embed(self, texts: list[str], what: str) -> tuple[np.ndarray, int]:
        """The float32 vectors [len(texts), d] of `texts` and the tokens the server counted.
        `what` names the request in errors (the input rows it carries)."""
        body: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": "base64"}
        if self.dimensions is not None:
            body["dimensions"] = self.dimensions
        payload = json.dumps(body).encode()
        refused_since: float | None = None
        failures = 0
        while True:
            try:
                status, retry_after, answer = self._post(payload)
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                failures += 1
                self._back_off(failures, what, f"no answer ({type(exc).__name__}: {exc})")
                continue
            if status == 200:
                return self._parse(answer, len(texts), what)
            last = f"{status} {_message(answer)}"
            if status in (429, 503):
                now = time.monotonic()
                refused_since = now if refused_since is None else refused_since
                wait = _retry_after(retry_after)
                if now + wait - refused_since > self.options.retry_seconds:
                    raise ServerError(
                        f"{what}: the server at {self.endpoint} refused them for "
                        f"{now - refused_since:.0f} s, and a retry after {wait:.0f} s more would "
                        f"pass the {self.options.retry_seconds:g} s allowed "
                        f"(--server-retry-seconds); its last answer: {last}"
                    )
                self._sleep(wait)
            elif status >= 500:
                failures += 1
                self._back_off(failures, what, last)
            else:
                refused = TooLargeError if _too_large(status, answer) else ServerError
                raise refused(f"{what}: the server at {self.endpoint} answered {last}")

    def close(self) -> None:
        """Stop any retry waiting and close every connection."""
        self._stop.set()
        with self._lock:
            for connection in self._open:
                # shutdown, not just close: it wakes a thread blocked reading this socket.
                if connection.sock is not None:
                    with contextlib.suppress(OSError):
                        connection.sock.shutdown(socket.SHUT_RDWR)
                connection.close()
            self._open.clear()

    def _post(self, payload: bytes) -> tuple[int, str | None, bytes]:
        connection = self._connection()
        path = self._target.path + (f"?{self._target.query}" if self._target.query else "")
        connection.request("POST", path, body=payload, headers=self._headers)
        response = connection.getresponse()
        answer = response.read()
        if response.will_close:
            self._drop()
        return response.status, response.getheader("Retry-After"), answer

    def _connection(self) -> http.client.HTTPConnection:
        if self._stop.is_set():  # a closed connection would reopen itself on its next request
            raise ServerError("stopped: the job ended")
        connection = getattr(self._local, "connection", None)
        if connection is None:
            kind = (
                http.client.HTTPSConnection
                if self._target.scheme == "https"
                else http.client.HTTPConnection
            )
            connection = kind(
                self._target.hostname or "", self._target.port, timeout=self.options.timeout
            )
            with self._lock:
                # Checked under the lock `close` takes: no connection opens after it.
                if self._stop.is_set():
                    raise ServerError("stopped: the job ended")
                self._open.append(connection)
            self._local.connection = connection
        return connection

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None
            with self._lock:
                if connection in self._open:
                    self._open.remove(connection)

    def _back_off(self, failures: int, what: str, last: str) -> None:
        if failures >= self.options.tries:
            raise ServerError(
                f"{what}: the server at {self.endpoint} failed {failures} tries; the last: {last}"
            )
        self._sleep(self.options.backoff_seconds * 2 ** (failures - 1))

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise ServerError("stopped while waiting to retry")

    def _parse(self, answer: bytes, count: int, what: str) -> tuple[np.ndarray, int]:
        try:
            body = json.loads(answer)
            items = sorted(body["data"], key=lambda item: item["index"])
            indexes = [item["index"] for item in items]
            vectors = [_vector(item["embedding"]) for item in items]
            tokens = int((body.get("usage") or {}).get("prompt_tokens") or 0)
        except (ValueError, KeyError, TypeError) as exc:
            raise ServerError(
                f"{what}: the server at {self.endpoint} answered 200 with a body that is not an "
                f"embeddings response ({type(exc).__name__}: {exc})"
            ) from exc
        widths = {len(v) for v in vectors}
        # Each input exactly its own vector: a count that matches is not enough (index twice).
        if indexes != list(range(count)) or len(widths) != 1:
            raise ServerError(
                f"{what}: the server at {self.endpoint} answered {len(vectors)} vectors "
                f"(indexes {_span(indexes)}) of widths {sorted(widths)} for {count} inputs"
            )
        if self.width is not None and widths != {self.width}:
            raise ServerError(
                f"{what}: the server at {self.endpoint} answered vectors of {widths.pop()} "
                f"dimensions, {self.width} before"
            )
        return np.stack(vectors), tokens


def _vector(value: Any) -> np.ndarray:
    # base64 as asked; a server that ignores encoding_format sends a list of numbers instead.
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value, validate=True), dtype="<f4").astype(np.float32)
    return np.asarray(value, dtype=np.float32)


def _span(indexes: list[Any]) -> str:
    return ", ".join(map(str, indexes[:8])) + (", ..." if len(indexes) > 8 else "")


def _message(answer: bytes) -> str:
    """The error message of an OpenAI-shaped (or TEI-shaped) error body, else the body's start."""
    try:
        body = json.loads(answer)
        error = body.get("error", body) if isinstance(body, dict) else body
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str) and message:
            return message
    except ValueError:
        pass
    return answer[:500].decode("utf-8", "replace").strip() or "(empty body)"


def _too_large(status: int, answer: bytes) -> bool:
    """Whether a refusal is for the request's size: a 413 whatever its body (a proxy's is a web
    page), or a 400 whose OpenAI-shaped body has a code of TOO_LARGE_CODES."""
    if status == 413:
        return True
    if status != 400:
        return False
    try:
        return json.loads(answer)["error"]["code"] in TOO_LARGE_CODES
    except (ValueError, KeyError, TypeError):  # not JSON, another shape, an unhashable code
        return False


def _retry_after(value: str | None) -> float:
    """Seconds to wait: Retry-After's seconds or HTTP date (RFC 9110), else DEFAULT_RETRY_AFTER."""
    if value is None:
        return DEFAULT_RETRY_AFTER
    value = value.strip()
    try:
        seconds = (
            float(value)
            if value.isdigit()
            else parsedate_to_datetime(value).timestamp() - time.time()
        )
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER
    # A floor, so that `Retry-After: 0` answered again and again is no busy loop.
    return max(MIN_RETRY_AFTER, seconds)


def _rows(rows: list[int]) -> str:
    if len(rows) == 1:
        return f"input row {rows[0]}"
    return f"input rows {rows[0]} to {rows[-1]} ({len(rows)} texts)"


# How embedserve (and OpenAI) name one text of a request in an error: `input[2] has ...`.
_INPUT_INDEX = re.compile(r"\binput\[(\d+)\]")


def _named_inputs(message: str, rows: list[int], name: Callable[[int], str]) -> str:
    """The input rows behind the `input[k]` a refusal names (a request holds a chunk's good
    rows only, so k is not an offset from its first row), each as `name(row)` words it."""
    indexes = dict.fromkeys(int(k) for k in _INPUT_INDEX.findall(message))
    return ", ".join(f"input[{k}]: {name(rows[k])}" for k in indexes if k < len(rows))


class Splitter:
    """A chunk's texts in requests the server takes. A request refused as too large is sent
    again as two halves, each on its own and in order, down to single texts; the pieces'
    vectors are joined in input order and their token counts added, which is what one accepted
    request answers (the server counts each input's tokens on its own). A single text still
    refused stops the job, as any other refusal does.

    The size of those halves is remembered (under a lock: chunks run on a few threads) as the
    most texts a request holds from then on, so that later chunks are cut below the size the
    server refused up front, not refused again each time."""

    def __init__(self, client: EmbeddingsClient, log: Callable[[str], None] | None) -> None:
        self.client = client
        self.log = log
        self.most: int | None = None  # None until a request is refused as too large
        # An input row and where it is in its file (pipeline.input_row over the run's plan), for
        # errors only: worded once a request has failed, since a CSV's line takes a read of it.
        self.place: Callable[[int], str] | None = None
        self._lock = threading.Lock()

    def embed(self, texts: list[str], rows: list[int]) -> tuple[np.ndarray, int]:
        """The float32 vectors [len(texts), d] and the tokens the server counted."""
        pieces: list[tuple[np.ndarray, int]] = []
        start = 0
        while start < len(texts):
            # Read before each piece: a refusal of the one before may have lowered it.
            end = start + (self.most or len(texts))
            pieces.append(self._send(texts[start:end], rows[start:end]))
            start = end
        if len(pieces) == 1:
            return pieces[0]
        return np.concatenate([v for v, _ in pieces]), sum(t for _, t in pieces)

    def _send(self, texts: list[str], rows: list[int]) -> tuple[np.ndarray, int]:
        try:
            return self.client.embed(texts, _rows(rows))
        except ServerError as exc:
            if len(rows) == 1:
                if self.place is None:
                    raise
                # Its request's message starts with its row; say where the text is there.
                message = str(exc).removeprefix(_rows(rows))
                raise type(exc)(self.place(rows[0]) + message) from exc
            if not isinstance(exc, TooLargeError):
                named = _named_inputs(str(exc), rows, self._name)
                if named:
                    raise ServerError(f"{exc} ({named})") from exc
                raise
        self._learn(len(texts))
        # Cut again at the size just learned (or a smaller one another thread learned): halves.
        return self.embed(texts, rows)

    def _name(self, row: int) -> str:
        """Input row `row` for an error: with its file and line where the plan is known."""
        return f"input row {row}" if self.place is None else self.place(row)

    def _learn(self, refused: int) -> None:
        most = (refused + 1) // 2
        with self._lock:
            if self.most is not None and self.most <= most:
                return
            self.most = most
        # Once per size, so at most log2(--batch-texts) lines in a job.
        if self.log:
            self.log(
                f"the server refused {refused} texts in one request as too large: requests are "
                f"split, to at most {most} texts each"
            )


class ServerEmbedder:
    """embed-file's model stage over HTTP: file slices in, embedded chunks out, in row order."""

    def __init__(
        self,
        client: EmbeddingsClient,
        options: EmbedFileOptions,
        concurrency: int,
        log: Callable[[str], None] | None,
    ) -> None:
        self.client = client
        self.splitter = Splitter(client, log)
        self.options = options
        self.concurrency = concurrency

    def __call__(self, slices: list[FileSlice]) -> Iterator[Chunk]:
        options = self.options
        self.splitter.place = partial(input_row, slices)
        chunks = (
            c
            for s in slices
            for c in chunks_of(s, options.columns, options.batch_texts, options.on_error)
        )
        # The server counts tokens per request only: no request may straddle two parts.
        return self._in_order(at_part_ends(chunks, options.rows_per_part))

    def _in_order(self, chunks: Iterable[Chunk]) -> Iterator[Chunk]:
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="embedserve-server")
        pending: deque[Future[Chunk]] = deque()
        try:
            for chunk in chunks:
                pending.append(pool.submit(self._embed, chunk))
                # One more than the pool runs: the next request starts as soon as one ends.
                if len(pending) > self.concurrency:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
            self.client.close()  # ends retry waits, so shutting the pool down is quick
            pool.shutdown(wait=True, cancel_futures=True)

    def _embed(self, chunk: Chunk) -> Chunk:
        if chunk.rows:
            vectors, tokens = self.splitter.embed(chunk.texts, chunk.rows)
            chunk.vectors = quantize(vectors, self.options.embedding_type)
            chunk.token_counts = _spread(tokens, len(chunk.rows))
        chunk.texts = []
        return chunk


def _spread(total: int, count: int) -> np.ndarray:
    """A request's token total over its rows: only the totals (per part) are kept, and they are
    exact because no request straddles two parts."""
    counts = np.full(count, total // count, dtype=np.int64)
    counts[: total % count] += 1
    return counts


def embed_file_on_server(
    source: str | Path,
    out: str | Path,
    options: EmbedFileOptions | None = None,
    *,
    server: ServerOptions,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """`embed_file` with the model on the server at `server.url` (`options.model`: its id there)."""
    options = options or EmbedFileOptions()
    if options.cache_dir is not None:
        raise ValueError("the disk cache (--cache-dir) works with the in-process model only")
    fingerprint = dict.fromkeys(MODEL_SETTINGS, SERVER_SIDE)
    check_output(source, out, options, fingerprint)  # before any request
    client = EmbeddingsClient(server, options.model, options.dimensions)
    try:
        # One short request first: a wrong URL, key or model fails before any input is read,
        # and the answer gives the output's width.
        probe, _ = client.embed([_PROBE], "the first request (one probe text)")
        dimension = int(probe.shape[1])
        if options.dimensions is not None and dimension != options.dimensions:
            raise ServerError(
                f"asked the server at {client.endpoint} for {options.dimensions} dimensions, "
                f"it answered {dimension}: it does not take `dimensions` for this model"
            )
        client.width = dimension
        embedder = ServerEmbedder(client, options, server.concurrency, log)
        return embed_file(
            source,
            out,
            options,
            embedder=embedder,
            dimension=dimension,
            fingerprint=fingerprint,
            log=log,
        )
    finally:
        client.close()
