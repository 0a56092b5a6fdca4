"""Text Embeddings Inference's API: `POST /embed` and `POST /` (bare `[[floats]]`), `/similarity`
(`InferenceClient("URL/similarity").sentence_similarity`), `/tokenize`, `/decode` and `GET /info`,
with TEI's error body `{"error": ..., "error_type": ...}`.

`huggingface_hub.InferenceClient(url).feature_extraction(text)` posts to `/` with its settings
under `parameters`, as the Inference API takes them; TEI's own clients put them at the top level.
Both are accepted (a key given in both places takes the `parameters` value).

`inputs` of `/embed` and `/` (and of /embed_sparse and /embed_all: `sparse`, `token_vectors`)
may also be token ids in the model's vocabulary, as TEI takes them:
one array of ids (one input) or an array of them, each a whole sequence as `/tokenize` answers it
(`token_arrays.model_sequences`), whatever `--token-encoding` says (that is OpenAI's input);
texts and id arrays may be mixed in one array, as TEI's `InputType` (String or Ids) allows.

`GET /info` is asked by TEI clients and by Azure AI inference's `get_model_info`; the Azure SDK
always sends `api-version` and TEI clients never do, so that query parameter picks the shape.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import numpy as np
from litestar import Request, Response, get, post
from tokenizers import Encoding

from embedserve import __version__
from embedserve.inputs import Inputs
from embedserve.models.kind import EMBEDDER, SPARSE
from embedserve.server.adapters.base import (
    compute,
    decode,
    json_response,
    raw_float_rows,
    read_struct,
)
from embedserve.server.adapters.openai import azure_model_info
from embedserve.server.auth import require_api_key
from embedserve.server.config import Limits
from embedserve.server.errors import invalid
from embedserve.server.fields import TeiDirection, tei_direction
from embedserve.server.limits import check_field_id_count, check_id_count
from embedserve.server.plumbing import read_parsed, run_job, state, timing_headers
from embedserve.server.schemas import EmbeddingsRequest
from embedserve.server.tasks.tokens import DecodeJob, TokenizeJob

T = TypeVar("T")
Positive = Annotated[int, msgspec.Meta(ge=1)]
# A text, texts, one array of token ids or arrays of them (msgspec allows one array type in a
# union, so the items' kinds are sorted out by `tei_inputs`).
TeiInputs = str | list[str | int | list[int]]


class EmbedParameters(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Settings of `POST /embed`, at the top level or under `parameters`."""

    normalize: bool | None = None
    truncate: bool | None = None
    truncation_direction: TeiDirection | None = None
    prompt_name: str | None = None
    dimensions: Positive | None = None
    # huggingface_hub can send it; only TEI's default is served.
    encoding_format: Literal["float"] | None = None


class EmbedRequest(EmbedParameters, kw_only=True):
    """TEI's `POST /embed` body."""

    inputs: TeiInputs
    parameters: EmbedParameters | None = None


class SimilarityInputs(msgspec.Struct, forbid_unknown_fields=True):
    # Empty is refused by the embed task, which names it (`last_param`), as TEI does (400 Empty).
    source_sentence: str
    sentences: list[str]


class SimilarityParameters(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Settings of `POST /similarity`, at the top level or under `parameters`."""

    truncate: bool | None = None
    truncation_direction: TeiDirection | None = None
    prompt_name: str | None = None


class SimilarityRequest(SimilarityParameters, kw_only=True):
    """TEI's `POST /similarity` body (what `InferenceClient(url).sentence_similarity` sends)."""

    inputs: SimilarityInputs
    parameters: SimilarityParameters | None = None


class TokenizeRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    inputs: str | list[str]
    add_special_tokens: bool = True
    # As TEI: the texts are tokenized behind this prompt (none named: the model's default, as
    # /embed does), and the tokens' text and offsets are the prompted text's.
    prompt_name: str | None = None


class DecodeRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # One id array, or a list of them: kept raw, decoded as one or the other (`_id_arrays`).
    ids: msgspec.Raw
    skip_special_tokens: bool = True


class SimpleToken(msgspec.Struct):
    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


class Info(msgspec.Struct):
    """TEI's `GET /info`."""

    model_id: str
    model_sha: str | None
    model_dtype: str
    model_type: dict[str, dict[str, str]]
    # Not TEI's: the architecture family that computes the model (models/family.py).
    model_family: str | None
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int | None
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int
    version: str
    sha: str | None
    docker_label: str | None


def _merged(body: Any, kind: type[msgspec.Struct]) -> dict[str, Any]:
    """The settings of `kind` from the top level, overridden by those under `parameters`."""
    merged = {f: getattr(body, f) for f in kind.__struct_fields__}
    if body.parameters is not None:
        for name in kind.__struct_fields__:
            value = getattr(body.parameters, name)
            if value is not None:
                merged[name] = value
    return merged


_KINDS = {str: "a text", int: "a token id", list: "an array of token ids"}


def tei_inputs(inputs: TeiInputs) -> Inputs:
    """`inputs` as texts, token arrays or both: an array of ids is one input, an array of texts
    and id arrays one input each, in order (TEI's `Input::Batch(Vec<InputType>)`, InputType an
    untagged String or Vec<u32>: router/src/http/types.rs in huggingface/
    text-embeddings-inference at 0d124dc9773be6ac5a9a57d8439aba9bbbf33273). An id beside a text
    or an id array is neither."""
    if isinstance(inputs, str):
        return Inputs(texts=[inputs])
    if not inputs:
        return Inputs(texts=[])
    kinds = {type(item) for item in inputs}
    if int in kinds and len(kinds) > 1:
        first = type(inputs[0])
        odd = next(i for i, item in enumerate(inputs) if type(item) is not first)
        raise invalid(
            f"inputs[{odd}] is {_KINDS[type(inputs[odd])]} and inputs[0] {_KINDS[first]}: an "
            "array holds token ids (one input), or texts and arrays of token ids",
            param="inputs",
            code="invalid_type",
        )
    if kinds == {str}:
        return Inputs(texts=inputs)  # type: ignore[arg-type]
    if kinds == {int}:
        return Inputs(token_arrays=[inputs])  # type: ignore[list-item]
    if kinds == {list}:
        return Inputs(token_arrays=inputs)  # type: ignore[arg-type]
    return Inputs(mixed=inputs)  # type: ignore[arg-type]


def to_internal(body: EmbedRequest) -> EmbeddingsRequest:
    merged = _merged(body, EmbedParameters)
    return EmbeddingsRequest(
        inputs=tei_inputs(body.inputs),
        dimensions=merged["dimensions"],
        truncate=merged["truncate"],
        truncation_direction=tei_direction(merged["truncation_direction"]),
        # TEI normalizes unless told not to.
        normalize=True if merged["normalize"] is None else merged["normalize"],
        prompt_name=merged["prompt_name"],
    )


async def read_tei_body(request: Request[Any, Any, Any], kind: type[T]) -> T:
    """The body of a route whose `inputs` are `TeiInputs` (/embed, /embed_sparse, /embed_all),
    decoded as `kind`: a body of millions of ids is refused from its bytes first."""
    return await read_parsed(request, partial(_parse_tei, state(request).config.limits, kind))


def _parse_tei(limits: Limits, kind: type[T], body: bytes) -> T:
    check_field_id_count(body, limits, "inputs")
    return decode(body, kind)


async def _embed(request: Request[Any, Any, Any]) -> Response[bytes]:
    started = time.perf_counter()
    server = state(request)
    body = await read_tei_body(request, EmbedRequest)
    done = await compute(
        request,
        to_internal(body),
        server.registry.default,
        raw_float_rows,
        "inputs",
        model_sequences=True,
    )
    return json_response(done.result, headers=timing_headers(done, started))


@post("/embed", before_request=require_api_key, status_code=200)
async def embed(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Embeddings of `inputs` as a bare array of float arrays."""
    return await _embed(request)


@post("/", before_request=require_api_key, status_code=200)
async def root(request: Request[Any, Any, Any]) -> Response[bytes]:
    """TEI's root route, where `InferenceClient(url).feature_extraction` posts: as `/embed`."""
    return await _embed(request)


def _similarities(vectors: np.ndarray, tokens: int) -> bytes:
    """Cosine of each sentence with the source (the last row); the rows are unit length."""
    return msgspec.json.encode((vectors[:-1] @ vectors[-1]).tolist())


@post("/similarity", before_request=require_api_key, status_code=200)
async def similarity(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Cosine similarity of `source_sentence` with each of `sentences`: the embed task on the
    sentences and the source together (the source last, so that a sentence's index in an error
    is its index in `sentences`; errors about the source name `source_sentence`), normalized,
    rendered as one score per sentence."""
    started = time.perf_counter()
    body = await read_struct(request, SimilarityRequest)
    merged = _merged(body, SimilarityParameters)
    internal = EmbeddingsRequest(
        inputs=Inputs(texts=[*body.inputs.sentences, body.inputs.source_sentence]),
        truncate=merged["truncate"],
        truncation_direction=tei_direction(merged["truncation_direction"]),
        normalize=True,
        prompt_name=merged["prompt_name"],
    )
    done = await compute(
        request,
        internal,
        state(request).registry.default,
        _similarities,
        "sentences",
        last_param="source_sentence",
    )
    return json_response(done.result, headers=timing_headers(done, started))


def _tokens(pairs: list[tuple[str, Encoding]]) -> bytes:
    """Each text's tokens with character offsets (null for special tokens), as TEI answers."""
    out = []
    for text, encoding in pairs:
        tokens = []
        for token_id, token, special, (start, stop) in zip(
            encoding.ids, encoding.tokens, encoding.special_tokens_mask, encoding.offsets
        ):
            if special:
                tokens.append(SimpleToken(token_id, token, True, None, None))
            else:
                tokens.append(SimpleToken(token_id, text[start:stop], False, start, stop))
        out.append(tokens)
    return msgspec.json.encode(out)


@post("/tokenize", before_request=require_api_key, status_code=200)
async def tokenize(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The model's tokens of each input, behind its prompt if any, with character offsets (null
    for special tokens)."""
    body = await read_struct(request, TokenizeRequest, runs_model=False)
    server = state(request)
    model = server.registry.default
    engine, _ = model.require()
    texts = engine.prompted(
        [body.inputs] if isinstance(body.inputs, str) else body.inputs, body.prompt_name
    )
    job = TokenizeJob(
        engine, server.config, _tokens, texts=texts, add_special_tokens=body.add_special_tokens
    )
    done = await run_job(request, job, model.id)
    return json_response(done.result)


# msgspec allows one array type per union: the outer array's first item says which one to decode.
_IDS = msgspec.json.Decoder(list[int])
_ID_ARRAYS = msgspec.json.Decoder(list[list[int]])


def _id_arrays(raw: msgspec.Raw) -> list[list[int]]:
    """`ids` as id arrays: one array of integers, or an array of them."""
    view = memoryview(raw)
    nested = bytes(view[1:64]).lstrip().startswith(b"[")
    try:
        return _ID_ARRAYS.decode(view) if nested else [_IDS.decode(view)]
    except msgspec.ValidationError as exc:
        raise invalid(
            f"ids must be an array of integers or an array of arrays of integers ({exc})",
            param="ids",
            code="invalid_type",
        ) from exc


@post("/decode", before_request=require_api_key, status_code=200)
async def decode_ids(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Texts of model-vocabulary id arrays (one string per array)."""
    server = state(request)

    def parse(raw: bytes) -> DecodeRequest:
        # Before decoding: three million ids take about a second to decode.
        check_id_count(memoryview(raw), server.config.limits, "ids")
        return decode(raw, DecodeRequest)

    body = await read_parsed(request, parse, runs_model=False)
    arrays = _id_arrays(body.ids)
    model = server.registry.default
    engine, _ = model.require()
    job = DecodeJob(
        engine,
        server.config,
        msgspec.json.encode,
        arrays=arrays,
        skip_special_tokens=body.skip_special_tokens,
    )
    done = await run_job(request, job, model.id)
    return json_response(done.result)


# TEI's names for the precision the model runs at (int8 is embedserve's, TEI has none).
TEI_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "int8"}


@get("/info", before_request=require_api_key)
async def info(request: Request[Any, Any, Any]) -> Response[bytes]:
    """TEI's model description; Azure AI inference's when the query carries `api-version`."""
    if "api-version" in request.query_params:
        return json_response(azure_model_info(request))
    server = state(request)
    model = server.registry.default
    # TEI describes a SPLADE model as an embedding model with pooling "splade".
    sparse = model.kind == SPARSE
    engine, _ = model.require(SPARSE if sparse else EMBEDDER)
    config = server.config
    pooling = "splade" if sparse else engine.model_info.pooling
    return json_response(
        Info(
            model_id=model.id,
            model_sha=None,
            model_dtype=TEI_DTYPES.get(engine.model_info.precision, engine.model_info.precision),
            model_type={"embedding": {"pooling": pooling}},
            model_family=engine.model_info.family,
            max_concurrent_requests=config.max_queue,
            max_input_length=engine.model_info.max_tokens,
            max_batch_tokens=engine.max_batch_tokens,
            max_batch_requests=config.max_batch_requests,
            max_client_batch_size=config.limits.max_inputs,
            auto_truncate=config.auto_truncate,
            tokenization_workers=1,
            version=__version__,
            sha=None,
            docker_label=None,
        )
    )


ROUTES = [embed, root, similarity, tokenize, decode_ids, info]
