"""The two stand-in servers of `python -m bench floor`: read the request, decode its JSON, answer
a canned OpenAI embeddings body of one 384-float vector. No model, no tokenizer."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from litestar import Litestar, Request, Response, post

_VECTOR = np.random.default_rng(0).standard_normal(384).astype(np.float32)
_VECTOR /= np.linalg.norm(_VECTOR)
ANSWER = json.dumps(
    {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": _VECTOR.tolist()}],
        "model": "all-MiniLM-L6-v2",
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
).encode()
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    json.loads(body)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})


@post("/v1/embeddings", status_code=200)
async def _embeddings(request: Request) -> Response[bytes]:
    json.loads(await request.body())
    return Response(ANSWER, media_type="application/json")


framework = Litestar([_embeddings])
