"""Wire formats: each API is an adapter over one internal request and the shared pipeline.

An adapter module (`openai`, `tei`, `ollama`, `cohere`, `rerank`, `sparse`, `classify`,
`token_vectors`) does three things and nothing else:

1. **Parse** its body with a msgspec `Struct` (`forbid_unknown_fields`; the same Struct documents
   the route in `/openapi.json`), or by hand where a field needs its own message (`server.schemas`,
   `rerank_schemas`), and map it onto a task's internal request: `server.schemas.EmbeddingsRequest`
   for every embeddings route. Each field is checked here, once; later layers trust it.
2. **Run** it as a task's job (`server/tasks/`) on the one `server.pipeline.RequestPipeline`:
   `base.compute` for embeddings; rerank, score, tokenize and decode build their own job. The
   same admission, limits, bounded tokenization, batching, cancellation, drain and metrics apply
   to every route, none of which learns which API called.
3. **Render** the result in its own response shape, through a `render` the job runs (on a worker
   thread when the answer is large). Errors take the route's API shape without the adapter's
   help: `server.shapes` maps each path to its API.

To add an API: write `adapters/NAME.py` with its Structs, handlers and a `ROUTES` list, add it to
`ROUTES` below, to `server/openapi.py`'s table and, if its errors have a shape of their own, to
`server/shapes.py`; nothing else changes.
"""

from __future__ import annotations

from embedserve.server.adapters import (
    classify,
    cohere,
    ollama,
    openai,
    rerank,
    sparse,
    tei,
    token_vectors,
)

ROUTES = [
    *openai.ROUTES,
    *tei.ROUTES,
    *ollama.ROUTES,
    *cohere.ROUTES,
    *rerank.ROUTES,
    *sparse.ROUTES,
    *classify.ROUTES,
    *token_vectors.ROUTES,
]

__all__ = ["ROUTES"]
