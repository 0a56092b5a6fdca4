"""Cohere's v2 embed API: `POST /v2/embed` (`cohere.ClientV2(base_url=...)`).

The texts come in `texts`, or in `inputs` (cohere-python 5.21.1's `EmbedInput`: a `content`
list of text and image_url parts), one embedding per input: its text parts joined with a newline
(Cohere does not say how it joins them; a line break keeps separate parts apart), embedded as
that text would be in `texts`. The models embed text, so `images`, image parts and
`input_type: "image"` are refused by name (`texts_of`).

`input_type` picks the model's prompt of the matching name when it has one (`search_query` →
`query`, `search_document` → `document` or `passage`, `classification`, `clustering`), else none.
`embedding_types` returns any of float, int8, uint8, binary, ubinary (embedserve.quantization)
and base64 (little-endian float32, as OpenAI's). `truncate`: `END` (default) cuts the end of an
over-long text, `START` its start, `NONE` refuses it; `max_tokens` lowers "over-long" from the
model's limit to that many tokens (special tokens included, as the model's limit counts them).
`priority` (Cohere's: 0, the default, is the highest; larger numbers wait) maps onto
embedserve's two classes: 0 keeps the request's own (the `X-Priority` header's, else
interactive), anything larger is batch work. Errors are `{"message": ...}`.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
import numpy as np
from litestar import Request, Response, post

from embedserve import _core
from embedserve.admission import Priority
from embedserve.engine import Engine, ModelInfo
from embedserve.inputs import Inputs
from embedserve.quantization import quantize
from embedserve.server.adapters.base import (
    compute,
    decode,
    json_response,
    raw_float_rows,
)
from embedserve.server.auth import require_api_key
from embedserve.server.errors import invalid
from embedserve.server.plumbing import read_parsed, state, timing_headers
from embedserve.server.schemas import EmbeddingsRequest as Internal

# "image" is Cohere's too (for images): accepted here to be refused by name in `texts_of`.
InputType = Literal["search_document", "search_query", "classification", "clustering", "image"]
EmbeddingType = Literal["float", "int8", "uint8", "binary", "ubinary", "base64"]
Positive = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]

# Cohere's input types → prompt names models use for them, first match wins.
PROMPTS: dict[str, tuple[str, ...]] = {
    "search_query": ("search_query", "query"),
    "search_document": ("search_document", "document", "passage"),
    "classification": ("classification",),
    "clustering": ("clustering",),
}


# The separator between an input's text parts (see the module's docstring).
PART_SEPARATOR = "\n"


class TextPart(msgspec.Struct, tag_field="type", tag="text", forbid_unknown_fields=True):
    text: str


class ImageUrlPart(msgspec.Struct, tag_field="type", tag="image_url"):
    """Decoded whatever it holds, only to be refused by name (`texts_of`)."""

    image_url: Any = None


class EmbedInput(msgspec.Struct, forbid_unknown_fields=True):
    content: list[TextPart | ImageUrlPart]


class EmbedRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v2/embed`: `texts` or `inputs` (`texts_of`)."""

    model: str
    texts: list[str] | None = None
    inputs: list[EmbedInput] | None = None
    # Image data URIs: accepted only to be refused by name (`texts_of`).
    images: list[str] | None = None
    input_type: InputType
    embedding_types: list[EmbeddingType] | None = None
    output_dimension: Positive | None = None
    # Each text's tokens at most (`max_tokens_for`); over it, `truncate` cuts or refuses.
    max_tokens: Positive | None = None
    truncate: Literal["NONE", "START", "END"] = "END"
    priority: NonNegative = 0


class Embeddings(msgspec.Struct, omit_defaults=True, rename={"float_": "float"}):
    float_: list[list[float]] | None = None
    int8: list[list[int]] | None = None
    uint8: list[list[int]] | None = None
    binary: list[list[int]] | None = None
    ubinary: list[list[int]] | None = None
    base64: list[str] | None = None


class ApiVersion(msgspec.Struct):
    version: str


class BilledUnits(msgspec.Struct):
    input_tokens: int


class Meta(msgspec.Struct):
    api_version: ApiVersion
    billed_units: BilledUnits


class EmbedResponse(msgspec.Struct):
    id: str
    embeddings: Embeddings
    texts: list[str]
    meta: Meta
    response_type: Literal["embeddings_by_type"] = "embeddings_by_type"


def prompt_for(input_type: str, info: ModelInfo) -> str | None:
    return next((name for name in PROMPTS[input_type] if name in info.prompts), None)


class Parsed(NamedTuple):
    body: EmbedRequest
    texts: list[str]
    param: str  # the field the texts came in, which later errors name


def parse(raw: bytes) -> Parsed:
    """The body and its texts (`texts_of`), read together so that both run on a worker thread
    when the body is large: joining the parts of thousands of inputs is a Python loop."""
    body = decode(raw, EmbedRequest)
    return Parsed(body, *texts_of(body))


def texts_of(body: EmbedRequest) -> tuple[list[str], str]:
    """The texts to embed and the field they came in: `texts`, or `inputs` with each input's
    text parts joined; a 400 naming the field for images, for both fields or for neither."""
    model = body.model
    if body.images:
        raise invalid(
            f"images: the model `{model}` embeds text only; send texts, or inputs of text parts",
            param="images",
        )
    if body.input_type == "image":
        raise invalid(
            f"input_type `image` is for images; the model `{model}` embeds text only: use "
            "search_document, search_query, classification or clustering",
            param="input_type",
        )
    if body.texts is not None and body.inputs is not None:
        raise invalid("send texts or inputs, not both", param="inputs")
    if body.texts is not None:
        return body.texts, "texts"
    if body.inputs is None:
        raise invalid(
            'texts or inputs is required: texts as ["..."], or inputs as '
            '[{"content": [{"type": "text", "text": "..."}]}]',
            param="texts",
        )
    return [_input_text(i, item, model) for i, item in enumerate(body.inputs)], "inputs"


def _input_text(index: int, item: EmbedInput, model: str) -> str:
    if not item.content:
        raise invalid(
            f"inputs[{index}].content is empty; send at least one text part", param="inputs"
        )
    parts = []
    for j, part in enumerate(item.content):
        if isinstance(part, ImageUrlPart):
            raise invalid(
                f"inputs[{index}].content[{j}] is an image_url part; the model `{model}` embeds "
                "text only: send text parts",
                param="inputs",
            )
        parts.append(part.text)
    return PART_SEPARATOR.join(parts)


def max_tokens_for(max_tokens: int | None, engine: Engine) -> int | None:
    """Cohere's `max_tokens`, counted as the model's limit is (its special tokens included):
    at most that limit, and room for at least one token of text."""
    if max_tokens is None:
        return None
    limit, specials = engine.model_info.max_tokens, engine.tokenizer.specials
    if not specials < max_tokens <= limit:
        raise invalid(
            f"max_tokens is {max_tokens}; {engine.model_info.name} takes from {specials + 1} to "
            f"{limit} tokens per text ({specials} of them its special tokens)",
            param="max_tokens",
        )
    return max_tokens


def _embeddings(vectors: np.ndarray, kinds: list[str]) -> Embeddings:
    """The vectors in each asked type (on the pipeline's worker thread when they are many)."""
    embeddings = Embeddings()
    for kind in kinds:
        if kind == "float":
            embeddings.float_ = raw_float_rows(vectors)  # type: ignore[assignment]
        elif kind == "base64":
            embeddings.base64 = _core.encode_base64(vectors)
        else:
            setattr(embeddings, kind, quantize(vectors, kind).tolist())
    return embeddings


@post("/v2/embed", before_request=require_api_key, status_code=200)
async def embed(request: Request[Any, Any, Any]) -> Response[bytes]:
    started = time.perf_counter()
    body, texts, param = await read_parsed(request, parse)
    model = state(request).registry.get(body.model)
    engine, _ = model.require()
    internal = Internal(
        inputs=Inputs(texts=texts),
        model=model.id,
        dimensions=body.output_dimension,
        truncate=body.truncate != "NONE",
        truncation_direction="left" if body.truncate == "START" else "right",
        prompt_name=prompt_for(body.input_type, engine.model_info),
        priority=Priority.BATCH if body.priority > 0 else None,
        max_tokens=max_tokens_for(body.max_tokens, engine),
    )
    kinds = list(dict.fromkeys(body.embedding_types or ["float"]))
    done = await compute(
        request,
        internal,
        model,
        lambda vectors, _: _embeddings(vectors, kinds),
        param,
        dimensions_param="output_dimension",
    )
    response = EmbedResponse(
        id=str(uuid.uuid4()),
        embeddings=done.result,
        texts=texts,
        meta=Meta(ApiVersion("2"), BilledUnits(done.tokens)),
    )
    return json_response(response, headers=timing_headers(done, started))


ROUTES = [embed]
