"""The request layer alone: parsing and the embed job's limits, with a fake tokenizer step."""

from __future__ import annotations

import numpy as np
import pytest
from embedserve.engine import ModelInfo
from embedserve.inputs import Inputs
from embedserve.preparing import Prepared
from embedserve.server.config import Limits, ServerConfig
from embedserve.server.errors import ApiError
from embedserve.server.schemas import (
    EmbeddingsRequest,
    check_api_version,
    check_extra_parameters,
    parse_embeddings_request,
)
from embedserve.server.tasks.embed import EmbedJob, vectors

INFO = ModelInfo(
    name="m",
    dimension=8,
    max_tokens=16,
    pooling="mean",
    normalize=True,
    supports_dimensions=True,
    provider="cpu",
    prompts={"query": "q: ", "document": ""},
)


class FakePreparer:
    """Each text has as many tokens as characters (plus 2 specials); remembers its last call."""

    model_info = INFO

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def prepare(
        self,
        inputs,
        *,
        truncate=True,
        truncation_direction="right",
        prompt_name=None,
        param="input",
        max_tokens=None,
        start=0,
    ):
        self.calls.append(
            {
                "truncate": truncate,
                "direction": truncation_direction,
                "prompt": prompt_name,
                "max_tokens": max_tokens,
            }
        )
        items = inputs.texts if inputs.texts is not None else inputs.token_arrays
        sequences = [
            np.zeros(min(len(x) + 2, 16) if truncate else len(x) + 2, np.int64) for x in items
        ]
        return Prepared(sequences, np.asarray([len(x) + 2 for x in items], np.int64))


def parse(body: bytes, policy: str = "error") -> EmbeddingsRequest:
    return parse_embeddings_request(body, extra_parameters=policy)


def test_parse_fills_defaults():
    request = parse(b'{"model": "m", "input": "hi"}')
    assert request == EmbeddingsRequest(inputs=Inputs(texts=["hi"]), model="m")
    assert (request.encoding_format, request.truncate, request.normalize) == ("float", None, None)


def test_extra_body_is_merged_and_overrides():
    request = parse(
        b'{"input": ["a"], "normalize": true, '
        b'"extra_body": {"normalize": false, "truncate": false}}'
    )
    assert (request.normalize, request.truncate) == (False, False)


def test_unknown_fields_follow_the_policy():
    with pytest.raises(ApiError) as info:
        parse(b'{"input": "a", "seed": 1}')
    assert (info.value.status, info.value.param, info.value.code) == (
        400,
        "seed",
        "unknown_parameter",
    )
    assert parse(b'{"input": "a", "seed": 1}', "drop").inputs == Inputs(texts=["a"])
    assert parse(b'{"input": "a", "seed": 1}', "pass-through").inputs == Inputs(texts=["a"])


def test_header_and_query_checks():
    assert check_extra_parameters(None) == "error"
    assert check_extra_parameters("drop") == "drop"
    for good in (None, "v1", "preview", "2024-05-01-preview", "2024-10-21", "2024-02-29"):
        assert check_api_version(good) == good
    for bad in (
        "",
        "1",
        "2024-5-1",
        "v1 ",
        "2024-13-45",
        "2023-02-29",
        "2024-02-30-preview",
        "v1\n",
        "٢٠٢٤-01-01",
    ):
        with pytest.raises(ApiError):
            check_api_version(bad)


def admit(request: EmbeddingsRequest, preparer: FakePreparer, limits: Limits, **kwargs) -> Prepared:
    """Check and tokenize on this thread, as the pipeline does on its pool."""
    job = EmbedJob(request, preparer, ServerConfig(limits=limits, **kwargs), vectors)
    for step in job.steps():
        step()
    return job.prepared


def run_admit(body: bytes, limits: Limits | None = None, **kwargs):
    limits = limits or Limits()
    preparer = FakePreparer()
    prepared = admit(parse(body), preparer, limits, **kwargs)
    return prepared, preparer.calls[-1]


def test_input_type_picks_the_models_prompt():
    assert run_admit(b'{"input": "a", "input_type": "query"}')[1]["prompt"] == "query"
    assert run_admit(b'{"input": "a", "input_type": "document"}')[1]["prompt"] == "document"
    assert run_admit(b'{"input": "a", "input_type": "text"}')[1]["prompt"] is None
    # An explicit prompt_name wins over input_type.
    assert (
        run_admit(b'{"input": "a", "input_type": "query", "prompt_name": "document"}')[1]["prompt"]
        == "document"
    )


def test_input_type_document_takes_the_document_prompt_before_a_passage_one():
    """sentence-transformers gives every model an empty "document" prompt, so its
    encode_document never reaches "passage" (preparing.prompt_name_for)."""
    preparer = FakePreparer()
    preparer.model_info = ModelInfo(**{**INFO.__dict__, "prompts": {"passage": "p: "}})
    admit(parse(b'{"input": "a", "input_type": "document"}'), preparer, Limits())
    assert preparer.calls[-1]["prompt"] == "document"


def test_input_type_without_a_saved_prompt_takes_the_empty_default_not_the_model_s():
    preparer = FakePreparer()
    preparer.model_info = ModelInfo(**{**INFO.__dict__, "prompts": {}})
    admit(parse(b'{"input": "a", "input_type": "query"}'), preparer, Limits())
    assert preparer.calls[-1]["prompt"] == "query"  # "", not default_prompt_name's
    admit(parse(b'{"input": "a", "input_type": "text"}'), preparer, Limits())
    assert preparer.calls[-1]["prompt"] is None


def test_truncation_follows_the_server_default_unless_the_request_says():
    assert run_admit(b'{"input": "a"}')[1]["truncate"] is True
    assert run_admit(b'{"input": "a"}', auto_truncate=False)[1]["truncate"] is False
    assert (
        run_admit(b'{"input": "a", "truncate": true}', auto_truncate=False)[1]["truncate"] is True
    )
    assert run_admit(b'{"input": "a", "truncation_direction": "left"}')[1]["direction"] == "left"


@pytest.mark.parametrize(
    ("body", "limits", "code"),
    [
        (b'{"input": ["a", "b", "c"]}', Limits(max_inputs=2), "too_many_inputs"),
        (b'{"input": "abcdefgh"}', Limits(max_input_tokens=9), "context_length_exceeded"),
        (b'{"input": ["abcd", "abcd"]}', Limits(max_request_tokens=11), "too_many_tokens"),
        (
            b'{"input": "a", "metadata": {"a": "b", "c": "d"}}',
            Limits(max_metadata_pairs=1),
            "invalid_value",
        ),
        (b'{"input": "a", "dimensions": 9}', Limits(), "invalid_value"),
        (b'{"input": "a", "dimensions": 0}', Limits(), "invalid_value"),
    ],
)
def test_each_limit(body, limits, code):
    with pytest.raises(ApiError) as info:
        run_admit(body, limits)
    assert (info.value.status, info.value.code) == (400, code)


def test_limits_at_their_edge_pass():
    prepared, _ = run_admit(
        b'{"input": ["abcd", "abcd"], "dimensions": 8}',
        Limits(max_inputs=2, max_input_tokens=6, max_request_tokens=12),
    )
    assert prepared.untruncated_tokens.tolist() == [6, 6]


def test_dimensions_need_a_matryoshka_model_or_the_flag():
    preparer = FakePreparer()
    preparer.model_info = ModelInfo(**{**INFO.__dict__, "supports_dimensions": False})
    request = parse(b'{"input": "a", "dimensions": 4}')
    with pytest.raises(ApiError) as info:
        admit(request, preparer, Limits())
    assert info.value.code == "unsupported_parameter"
    admit(request, preparer, Limits(), allow_dimensions=True)
