"""The one place that knows the request limits. Every task's job (server/tasks/) calls these.

The cheap checks (`check_count`, `check_characters`, `check_token_arrays`, metadata, dimensions)
need no tokenizer and cost microseconds, so the pipeline runs them before it admits a request,
before any tokenizing. Characters cannot bound tokens from below, so the character limits are
generous (16 per allowed token) and only refuse what no allowed input could be.

`TokenBudget` then follows a request through its bounded tokenization steps: each input (or
pair, or a MaxSim query sent once for all its documents) within `max_input_tokens` even when
truncation is on, all of them within `max_request_tokens`, checked after every step, so
tokenizing stops at the first step that passes a limit.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import numpy as np

from embedserve.engine import ModelInfo
from embedserve.inputs import Inputs
from embedserve.server.config import Limits
from embedserve.server.errors import ApiError, invalid

# Characters tokenized per step: about 10-30 ms of one tokenizer thread on a slow core.
CHUNK_CHARS = 64 * 1024
# Tokens per character assumed before any request was measured (English with WordPiece: ~0.23).
DEFAULT_TOKENS_PER_CHAR = 0.3
# (index, value) pairs one sparse response may hold: about 90 MB of JSON at ~45 bytes a pair.
# A trained SPLADE model gives 30-250 pairs a text (bench: 2,048 long texts ~ 500,000 pairs);
# an untrained or odd one can give thousands each, which `top_k` or `threshold` bound.
MAX_SPARSE_PAIRS = 2_000_000


def check_count(count: int, limit: int, param: str, *, plus_one: str | None = None) -> None:
    """At least one item in `param`, at most `limit`. `plus_one` names a text sent in a field of
    its own and counted with the items (TEI /similarity's `source_sentence`: TEI holds the source
    and the sentences together to its max_client_batch_size, which /info reports as ours)."""
    if count == 0:
        raise invalid(f"{param} must not be an empty array", param=param, code="empty_input")
    total = count + (plus_one is not None)
    if total > limit:
        held = f"{param} has {count} items"
        if plus_one is not None:
            held += f", {total} texts with {plus_one}"
        raise invalid(
            f"{held}; at most {limit} are allowed per request",
            param=param,
            code="too_many_inputs",
        )


def check_not_empty(
    lengths: Sequence[int], param: str, what: str = "an empty string", *, single: bool = False
) -> None:
    """No input of length 0; `single`: `param` is one text (TEI's `source_sentence`)."""
    empty = next((i for i, n in enumerate(lengths) if n == 0), None)
    if empty is not None:
        where = param if single else f"{param}[{empty}]"
        raise invalid(
            f"{where} is {what}; every input must hold at least one token",
            param=param,
            code="empty_input",
        )


def check_characters(
    lengths: Sequence[int],
    limits: Limits,
    param: str,
    *,
    noun: str = "inputs",
    already: int = 0,
    single: bool = False,
) -> int:
    """Each text within `max_input_chars`, all within `max_request_chars` together with the
    `already` characters counted for the same request; returns the running total. `single`:
    `param` is one text (a rerank query), not an array."""
    if lengths:
        longest = max(range(len(lengths)), key=lengths.__getitem__)
        if lengths[longest] > limits.max_input_chars:
            where = param if single else f"{param}[{longest}]"
            raise invalid(
                f"{where} has {lengths[longest]} characters; at most "
                f"{limits.max_input_chars} are allowed per input",
                param=param,
                code="context_length_exceeded",
            )
    total = already + sum(lengths)
    if total > limits.max_request_chars:
        raise invalid(
            f"the {noun} hold {total} characters in all; at most {limits.max_request_chars} "
            "are allowed per request",
            param=param,
            code="too_many_tokens",
        )
    return total


def check_inputs(inputs: Inputs, limits: Limits, param: str) -> int:
    """Each of `inputs` holds something and is within the limits: texts by their characters,
    token arrays counted exactly. Returns the characters (0 for token arrays)."""
    if inputs.texts is not None:
        lengths = [len(text) for text in inputs.texts]
        check_not_empty(lengths, param)
        return check_characters(lengths, limits, param)
    if inputs.mixed is not None:
        return _check_mixed(inputs.mixed, limits, param)
    lengths = [len(ids) for ids in inputs.token_arrays or []]
    check_not_empty(lengths, param, "an empty token array")
    check_token_arrays(lengths, limits, param)
    return 0


def _check_mixed(items: list[str | list[int]], limits: Limits, param: str) -> int:
    """`check_inputs` of texts and token arrays in one batch: each kind is checked as a batch
    of its own would be, the other kind's items counting as nothing (and as not empty), so
    every index a message names is the batch's."""
    is_text = [isinstance(item, str) for item in items]
    chars = [len(item) if text else 0 for item, text in zip(items, is_text)]
    ids = [0 if text else len(item) for item, text in zip(items, is_text)]
    check_not_empty([n if text else 1 for n, text in zip(chars, is_text)], param)
    empty_array = "an empty token array"
    check_not_empty([1 if text else n for n, text in zip(ids, is_text)], param, empty_array)
    check_token_arrays(ids, limits, param)
    return check_characters(chars, limits, param)


def estimate_tokens(inputs: Inputs, tokens_per_char: float, specials: int, cap: int) -> int:
    """The tokens `inputs` will take before they are tokenized: exact for token arrays, from the
    characters for texts; each with `specials` added and cut at the model's `cap`."""
    if inputs.mixed is not None:
        return sum(estimate_tokens(run, tokens_per_char, specials, cap) for _, run in inputs.runs())
    if inputs.token_arrays is not None:
        return sum(min(len(ids) + specials, cap) for ids in inputs.token_arrays)
    return sum(min(int(len(text) * tokens_per_char) + specials, cap) for text in inputs.texts or [])


def check_token_arrays(
    lengths: Sequence[int], limits: Limits, param: str = "input", *, truncated: bool = True
) -> None:
    """Token arrays are counted exactly (the model's special tokens not included). `truncated`
    False: ids that no model reads (/decode), which no truncation would cut either."""
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    if lengths[longest] > limits.max_input_tokens:
        raise input_tokens_error(param, longest, lengths[longest], limits, truncated=truncated)
    total = sum(lengths)
    if total > limits.max_request_tokens:
        raise invalid(
            f"the inputs hold {total} tokens in all; at most {limits.max_request_tokens} are "
            "allowed per request",
            param=param,
            code="too_many_tokens",
        )


def check_id_count(body: memoryview, limits: Limits, param: str) -> None:
    """Refuse a JSON body of ids (an array of ids, or of id arrays, and a few other fields but no
    strings) holding more ids than a request may, from its bytes, before decoding it: counting
    bytes takes milliseconds where decoding three million ids takes a second. Each comma but
    one per array (`[]` adds a comma and no id) and one per other field stands after an id."""
    data = np.frombuffer(body, dtype=np.uint8)
    commas = int(np.count_nonzero(data == ord(",")))
    arrays = int(np.count_nonzero(data == ord("[")))
    at_least = commas - arrays - 8
    if at_least > limits.max_request_tokens:
        raise invalid(
            f"{param} holds at least {at_least} ids; at most {limits.max_request_tokens} are "
            "allowed per request",
            param=param,
            code="too_many_tokens",
        )


# A body's fields as undecoded JSON: a fast pass that finds one field's bytes in a large body.
_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])


def check_field_id_count(body: bytes, limits: Limits, param: str) -> None:
    """`check_id_count` on the bytes of the body's field `param` (an `extra_body.<param>`
    overrides it, as the parser merges them), when they are token arrays: before decoding, as
    decoding eight million ids takes two seconds of a worker. Only a body that could hold more
    ids than allowed (two bytes an id) pays the pass; a field with a string in it, or a body the
    pass cannot read, is left to the parser, which says what is wrong with it."""
    if len(body) <= 2 * limits.max_request_tokens:
        return
    try:
        fields = _FIELDS.decode(body)
        extra = fields.get("extra_body")
        if extra is not None and bytes(memoryview(extra)[:1]) == b"{":
            fields.update(_FIELDS.decode(extra))
    except msgspec.MsgspecError:
        return
    raw = fields.get(param)
    if raw is None:
        return
    data = memoryview(raw)
    if not np.any(np.frombuffer(data, dtype=np.uint8) == ord('"')):  # ids only: commas count
        check_id_count(data, limits, param)


def input_tokens_error(
    param: str,
    index: int | None,
    tokens: int,
    limits: Limits,
    paired_with: str | None = None,
    *,
    truncated: bool = True,
) -> ApiError:
    """`index` None: `param` is one text (a rerank query), not an array. `paired_with` names the
    other side of a pair (`the query`), whose tokens count too. `truncated`: the input goes to a
    model that may cut it, which the message says the limit comes before."""
    where = (param if index is None else f"{param}[{index}]") + (
        f" with {paired_with}" if paired_with else ""
    )
    return invalid(
        f"{where} has {tokens} tokens; at most {limits.max_input_tokens} are allowed per "
        f"{'pair' if paired_with else 'input'}"
        + (", even when truncation is on" if truncated else ""),
        param=param,
        code="context_length_exceeded",
    )


class TokenBudget:
    """A request's token limits, checked as its tokenization steps finish."""

    def __init__(
        self, limits: Limits, param: str, noun: str = "inputs", paired_with: str | None = None
    ) -> None:
        self.limits = limits
        self.param = param
        self.noun = noun  # what the items are called in messages: inputs, documents, pairs
        self.paired_with = paired_with
        self.tokens = 0
        self._single = ""  # what `add_single` counted, named with the items: "query and "

    def add(self, untruncated: np.ndarray, start: int) -> None:
        """Count one step's inputs (`untruncated` tokens each, the first at index `start`)."""
        # One reduction for the usual case (nothing over); the index only for a refusal.
        if len(untruncated) and int(untruncated.max()) > self.limits.max_input_tokens:
            first = int(np.argmax(untruncated > self.limits.max_input_tokens))
            raise input_tokens_error(
                self.param, start + first, int(untruncated[first]), self.limits, self.paired_with
            )
        done = start + len(untruncated)
        self._count(
            int(untruncated.sum()), f"{self._single}the first {done} {self.noun} already hold"
        )

    def add_single(self, tokens: int, param: str) -> None:
        """Count one text sent in its own field and computed once for all the items (a MaxSim
        query, scored against every document), before them; errors about it name `param`."""
        if tokens > self.limits.max_input_tokens:
            raise input_tokens_error(param, None, tokens, self.limits)
        self._count(tokens, f"{param} already holds", param)
        self._single = f"{param} and "

    def add_last(self, tokens: int, param: str) -> None:
        """Count one text sent in its own field and computed after the items (TEI /similarity's
        source sentence); errors about it name `param`."""
        if tokens > self.limits.max_input_tokens:
            raise input_tokens_error(param, None, tokens, self.limits)
        self._count(tokens, f"the {self.noun} and {param} hold", param)

    def _count(self, tokens: int, held_by: str, param: str | None = None) -> None:
        """Add `tokens` to the request's; past `max_request_tokens`, a 400 saying which texts
        reached it (`held_by`: "the first 3 documents already hold")."""
        self.tokens += tokens
        if self.tokens > self.limits.max_request_tokens:
            raise invalid(
                f"{held_by} {self.tokens} tokens; at most "
                f"{self.limits.max_request_tokens} are allowed per request",
                param=param or self.param,
                code="too_many_tokens",
            )


def check_metadata(metadata: dict[str, str] | None, limits: Limits) -> None:
    if metadata is None:
        return
    if len(metadata) > limits.max_metadata_pairs:
        raise invalid(
            f"metadata has {len(metadata)} pairs; at most {limits.max_metadata_pairs} are allowed",
            param="metadata",
        )
    for key, value in metadata.items():
        if len(key) > limits.max_metadata_key_chars:
            raise invalid(
                f"metadata key {key[:20]!r}... has {len(key)} characters; at most "
                f"{limits.max_metadata_key_chars} are allowed",
                param="metadata",
            )
        if len(value) > limits.max_metadata_value_chars:
            raise invalid(
                f"metadata[{key!r}] has {len(value)} characters; at most "
                f"{limits.max_metadata_value_chars} are allowed",
                param="metadata",
            )


def check_dimensions(
    dimensions: int | None, info: ModelInfo, allow_dimensions: bool, param: str = "dimensions"
) -> None:
    """`dimensions` within the model's width, for a model trained to be cut (or any with
    --allow-dimensions); `param` is the API's name for it (Cohere's `output_dimension`)."""
    if dimensions is None:
        return
    if not info.supports_dimensions and not allow_dimensions:
        raise invalid(
            f"The model `{info.name}` does not support the {param} parameter: it was not "
            f"trained to be cut (Matryoshka). Leave {param} out, or start the server with "
            "--allow-dimensions to cut it anyway.",
            param=param,
            code="unsupported_parameter",
        )
    if not 1 <= dimensions <= info.dimension:
        raise invalid(
            f"{param} must be between 1 and {info.dimension}, got {dimensions}",
            param=param,
        )


def check_sparse_pairs(pairs: int, param: str = "inputs") -> None:
    """A sparse answer within MAX_SPARSE_PAIRS (checked once the vectors are pruned)."""
    if pairs > MAX_SPARSE_PAIRS:
        raise invalid(
            f"the sparse vectors hold {pairs} (index, value) pairs in all; at most "
            f"{MAX_SPARSE_PAIRS} are allowed per response: send fewer inputs, or set top_k or "
            "threshold",
            param=param,
            code="response_too_large",
        )
