"""TEI's `POST /embed_all`: every token's vector of each input, for any embedder (its final
hidden states, special tokens included, padding not) or a ColBERT (normalized, projected token
vectors; `is_query` picks query or document encoding). A model with a ColBERT head answers
that head's vectors: a BGE-M3 folder gives FlagEmbedding's `colbert_vecs` (colbert_linear, the
first token dropped, normalized), not its hidden states. TEI's error shape (server/shapes.py).
`inputs` may be token ids of the model's vocabulary for an embedder, as on TEI's /embed
(`tei.tei_inputs`); a ColBERT refuses them (`TokenVectorsJob`: PyLate encodes texts only).

`encoding_format: "float"` (TEI's default) answers `[[[float]]]` (inputs x tokens x
dimensions); `"base64"` answers one string per input: its [tokens, dimensions] matrix as
little-endian float32, row-major (tokens = bytes / 4 / dimensions).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec
import numpy as np
from litestar import Request, Response, post

from embedserve import _core
from embedserve.models.kind import EMBEDDER, LATE_INTERACTION
from embedserve.server.adapters.base import job_response
from embedserve.server.adapters.tei import TeiInputs, read_tei_body, tei_inputs
from embedserve.server.auth import require_api_key
from embedserve.server.fields import TeiDirection, tei_direction
from embedserve.server.plumbing import state
from embedserve.server.tasks.token_vectors import TokenVectorsJob


class EmbedAllRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """TEI's `POST /embed_all` body, plus `model`, `is_query` and `encoding_format`."""

    inputs: TeiInputs
    truncate: bool | None = None
    # An embedder's, as TEI's; a ColBERT refuses them (TokenVectorsJob).
    truncation_direction: TeiDirection | None = None
    prompt_name: str | None = None
    # Which served model (default: the first `--model`); TEI serves one.
    model: str | None = None
    # A ColBERT's query encoding ([Q] marker, expanded with [MASK]) rather than a document's.
    is_query: bool = False
    encoding_format: Literal["float", "base64"] = "float"


def _render(encoding_format: str) -> Any:
    def render(matrices: list[np.ndarray], tokens: int) -> bytes:
        if encoding_format == "base64":
            rows = [
                _core.encode_base64(np.ascontiguousarray(m, dtype=np.float32).reshape(1, -1))[0]
                for m in matrices
            ]
            return msgspec.json.encode(rows)
        return msgspec.json.encode([m.tolist() for m in matrices])

    return render


@post("/embed_all", before_request=require_api_key, status_code=200)
async def embed_all(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Every token's vector of each input."""
    started = time.perf_counter()
    server = state(request)
    body = await read_tei_body(request, EmbedAllRequest)
    registry = server.registry
    model = registry.default if body.model is None else registry.get(body.model)
    # A ColBERT head first: a BGE-M3 answers its ColBERT vectors, a plain embedder its states.
    engine, batcher = model.require(LATE_INTERACTION, EMBEDDER)
    job = TokenVectorsJob(
        engine,
        server.config,
        _render(body.encoding_format),
        inputs=tei_inputs(body.inputs),
        truncate=body.truncate,
        truncation_direction=tei_direction(body.truncation_direction),
        prompt_name=body.prompt_name,
        is_query=body.is_query,
    )
    # TEI's body is closed: the priority comes from the X-Priority header only.
    return await job_response(request, job, model.id, batcher, started=started)


ROUTES = [embed_all]
