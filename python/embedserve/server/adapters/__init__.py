"""Wire formats: each API is an adapter over one internal request.

An adapter module (`openai`, `tei`, `ollama`, `cohere`) does three things and nothing else:

1. **Parse** its body with a msgspec `Struct` (`forbid_unknown_fields`; the same Struct documents
   the route in `/openapi.json`) and map it onto the internal request,
   `server.schemas.EmbeddingsRequest` (inputs, model, dimensions, truncate, truncation_direction,
   normalize, prompt_name). Each field is checked here, once; later layers trust it.
2. **Run** it with `base.compute`, which goes through `EmbeddingService.embed_vectors`: the same
   admission, token limits, batching, cancellation and metrics for every API, none of which
   learns which API called.
3. **Render** the finished vectors (`service.Vectors`) in its own response shape, and its own
   error shape: `base.error_handlers(render)` turns every error the server raises into the
   adapter's body, at the status the OpenAI routes would use.

`openai` differs at steps 1 and 3 for reasons of its own: its body is parsed by hand
(`server.schemas`, so each mistake gets OpenAI's 400 naming the field and `extra-parameters` can
relax unknown fields), and `EmbeddingService.embed` encodes its response body on a worker thread
(base64 and the byte encodings, in C++); the app-wide error handlers already speak its error shape.

To add an API (rerank routes, say): write `adapters/NAME.py` with its Structs, handlers and a
`ROUTES` list, add it to `ROUTES` below and to `server/openapi.py`'s table; nothing else changes.
"""

from __future__ import annotations

from embedserve.server.adapters import cohere, ollama, openai, rerank, tei

ROUTES = [*openai.ROUTES, *tei.ROUTES, *ollama.ROUTES, *cohere.ROUTES, *rerank.ROUTES]

__all__ = ["ROUTES"]
