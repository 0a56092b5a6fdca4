"""What every adapter shares: body decoding into Structs, building and running a task's job on the
shared pipeline, and float rows as JSON (reading the body, the server's state and the timing
headers are every handler's: `server.plumbing`; error shapes are `server.shapes`')."""

from __future__ import annotations

from functools import partial
from typing import Any, TypeVar

import msgspec
import numpy as np
from litestar import Request, Response

from embedserve import _core
from embedserve.admission import Priority
from embedserve.batching import Batcher
from embedserve.server import token_arrays
from embedserve.server.errors import invalid
from embedserve.server.pipeline import Done, Job
from embedserve.server.plumbing import JSON, read_parsed, run_job, state, timing_headers
from embedserve.server.registry import ServedModel
from embedserve.server.schemas import EmbeddingsRequest
from embedserve.server.tasks.embed import EmbedJob, Render

T = TypeVar("T")
R = TypeVar("R")


async def read_struct(
    request: Request[Any, Any, Any], kind: type[T], *, runs_model: bool = True
) -> T:
    """The request's body decoded as the Struct `kind` (`decode`), off the loop when large
    (`runs_model`: `read_body`'s)."""
    return await read_parsed(request, partial(decode, kind=kind), runs_model=runs_model)


def decode(body: bytes, kind: type[T]) -> T:
    """`body` as the Struct `kind`; any mismatch is a 400 that names the field (`$.inputs`)."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise invalid(f"invalid request body: {exc}", code="invalid_value") from exc
    except (msgspec.DecodeError, RecursionError) as exc:
        raise invalid(
            f"We could not parse the JSON body of your request ({exc}). "
            "The body must be a JSON object, in UTF-8.",
            code="invalid_json",
        ) from exc


async def compute(
    request: Request[Any, Any, Any],
    internal: EmbeddingsRequest,
    model: ServedModel,
    render: Render[R],
    param: str = "input",
    last_param: str | None = None,
    *,
    model_sequences: bool = False,
    single: bool = False,
    dimensions_param: str = "dimensions",
) -> Done[R]:
    """Run the internal request through the pipeline (admission, limits, batching, metrics),
    dropping it from the queue if the client hangs up; `render` shapes the finished vectors,
    `param` is the API's name for the inputs, which its errors name (`last_param` the last
    input's, when it came in a field of its own; `single`: the one text is `param` itself;
    `dimensions_param` the API's name for `dimensions`: EmbedJob). Token arrays are read as the server's --token-encoding says, or
    with `model_sequences` as TEI reads them (whole sequences of the model's vocabulary:
    `token_arrays.model_sequences`)."""
    server = state(request)
    engine, batcher = model.require()
    resolve = (
        partial(token_arrays.model_sequences, engine.tokenizer)
        if model_sequences
        else server.token_arrays.resolve
    )
    job = EmbedJob(
        internal,
        engine,
        server.config,
        render,
        resolve=resolve,
        param=param,
        last_param=last_param,
        single=single,
        dimensions_param=dimensions_param,
    )
    return await run_job(request, job, model.id, batcher, internal.priority)


def float_rows(vectors: np.ndarray) -> bytes:
    """`[[...],[...]]`: rows written by the C++ JSON encoder, joined here."""
    rows = _core.encode_json(np.ascontiguousarray(vectors, dtype=np.float32))
    return ("[" + ",".join(rows) + "]").encode("ascii")


def json_response(
    content: bytes | Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> Response[bytes]:
    body = content if isinstance(content, bytes) else msgspec.json.encode(content)
    return Response(content=body, status_code=status, media_type=JSON, headers=headers or {})


async def job_response(
    request: Request[Any, Any, Any],
    job: Job[bytes],
    model: str,
    batcher: Batcher | None,
    priority: Priority | None = None,
    *,
    started: float,
) -> Response[bytes]:
    """Run `job`, whose result is a JSON body, and answer with it and the request's phase
    timings since `started` (see `run_job` for `batcher` and `priority`)."""
    done = await run_job(request, job, model, batcher, priority)
    return json_response(done.result, headers=timing_headers(done, started))


def raw_float_rows(vectors: np.ndarray, tokens: int = 0) -> msgspec.Raw:
    """A render: the rows as JSON, ready to place in any response Struct (msgspec writes a Raw
    as it is), written on the pipeline's worker thread when the answer is large."""
    return msgspec.Raw(float_rows(vectors))
