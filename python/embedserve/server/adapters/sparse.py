"""TEI's `POST /embed_sparse`: one sparse vector per input, `[[{"index", "value"}]]`, with TEI's
body (`inputs`, `truncate`, `truncation_direction`, `prompt_name`) and TEI's error shape.
`inputs` may be token ids of the model's vocabulary, as on TEI's /embed (`tei.tei_inputs`).

embedserve's additions: `top_k` (keep the k largest weights by magnitude, sentence-transformers'
`max_active_dims`), `threshold` (keep weights above it), `return_tokens` (each pair also
carries `token`, the vocabulary's string for its index) and `input_type` (`query` / `document`:
the model's prompt of that kind, as sentence-transformers' encode_query / encode_document; `query`
takes an inference-free model's SparseStaticEmbedding side, which runs no model). Served by the first
model in `--model` order that gives sparse vectors (a SPLADE SparseEncoder folder, or a BGE-M3
folder's sparse head); a server with none answers 400 `wrong_model_kind`.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, post

from embedserve.models.kind import SPARSE
from embedserve.server.adapters.base import job_response
from embedserve.server.adapters.tei import TeiInputs, read_tei_body, tei_inputs
from embedserve.server.auth import require_api_key
from embedserve.server.fields import TeiDirection, tei_direction
from embedserve.server.plumbing import state
from embedserve.server.tasks.sparse import SparseJob
from embedserve.sparse import SparseEncoder, SparseVector

Positive = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]


class EmbedSparseRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """TEI's `POST /embed_sparse` body, and embedserve's pruning and token options."""

    inputs: TeiInputs
    truncate: bool | None = None
    truncation_direction: TeiDirection | None = None
    prompt_name: str | None = None
    top_k: Positive | None = None
    threshold: NonNegative | None = None
    return_tokens: bool = False
    # sentence-transformers' encode_query / encode_document: the model's prompt of that kind;
    # "query" takes an inference-free model's query side (no model run).
    input_type: Literal["query", "document"] | None = None


class SparseValue(msgspec.Struct, omit_defaults=True):
    """One non-zero weight; `token` only when the request asks for `return_tokens`."""

    index: int
    value: float
    token: str | None = None


def _render(encoder: SparseEncoder, tokens: bool):
    def render(vectors: list[SparseVector], usage: int) -> bytes:
        out = []
        for vector in vectors:
            pairs = zip(vector.indices.tolist(), vector.values.tolist())
            if tokens:
                names = encoder.tokens(vector)
                out.append([SparseValue(i, v, t) for (i, v), t in zip(pairs, names)])
            else:
                out.append([SparseValue(i, v) for i, v in pairs])
        return msgspec.json.encode(out)

    return render


@post("/embed_sparse", before_request=require_api_key, status_code=200)
async def embed_sparse(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Sparse vectors of `inputs`: the non-zero (index, value) pairs of each, by ascending index."""
    started = time.perf_counter()
    body = await read_tei_body(request, EmbedSparseRequest)
    server = state(request)
    registry = server.registry
    model = registry.first_ready(SPARSE)
    if model is None:  # one still loading may be it (503); else the first model says its kind
        model = next((m for m in registry.models if not m.ready), registry.default)
    encoder, batcher = model.require(SPARSE)
    job = SparseJob(
        encoder,
        server.config,
        _render(encoder, body.return_tokens),
        inputs=tei_inputs(body.inputs),
        truncate=body.truncate,
        truncation_direction=tei_direction(body.truncation_direction),
        prompt_name=body.prompt_name,
        top_k=body.top_k,
        threshold=body.threshold,
        input_type=body.input_type,
    )
    # TEI's body is closed: the priority comes from the X-Priority header only.
    return await job_response(
        request, job, model.id, batcher if job.uses_model else None, started=started
    )


ROUTES = [embed_sparse]
