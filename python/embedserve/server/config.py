"""Everything a server needs to start, as plain data that survives the trip to a worker process."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from dataclasses import Field, asdict, dataclass, field
from pathlib import Path
from typing import Any

from embedserve.batching import (
    DEFAULT_MAX_BATCH_REQUESTS,
    DEFAULT_MAX_QUEUE_INPUTS,
    DEFAULT_MAX_WAIT_SECONDS,
)
from embedserve.loading import LoadSettings
from embedserve.models import DEFAULT_MODEL, find_entry
from embedserve.planning import LANE_SESSION_MODES
from embedserve.settings import setting, settings_of
from embedserve.token_encodings import TOKEN_ENCODINGS

# The model when no --model is given: one SPEC[=ALIAS], so an image's build argument can say
# what it serves (an exec-form CMD cannot read a build argument).
MODEL_ENV = "EMBEDSERVE_MODEL"
API_KEYS_ENV = "EMBEDSERVE_API_KEYS"
API_KEY_FILE_ENV = "EMBEDSERVE_API_KEY_FILE"
BATCH_API_KEYS_ENV = "EMBEDSERVE_BATCH_API_KEYS"
BATCH_API_KEY_FILE_ENV = "EMBEDSERVE_BATCH_API_KEY_FILE"


@dataclass(frozen=True)
class ModelSpec:
    """One `--model SPEC[=ALIAS]`: what to load, and the id clients use for it."""

    spec: str
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        # rpartition: a path may hold '=', an alias is the last '='-separated word.
        spec, sep, alias = text.rpartition("=")
        if not sep:
            return cls(text.strip())
        if not spec.strip() or not alias.strip():
            raise ValueError(f"--model {text!r}: expected SPEC or SPEC=ALIAS")
        return cls(spec.strip(), alias.strip())

    @property
    def id(self) -> str:
        """The model id in responses and /v1/models: the alias, else the catalog or folder name."""
        if self.alias:
            return self.alias
        entry = find_entry(self.spec)
        if entry is not None:
            return entry.name
        path = Path(self.spec).expanduser()
        return path.resolve().name if path.is_dir() else self.spec

    @property
    def names(self) -> tuple[str, ...]:
        """Every name a request may use for this model."""
        names = [self.id, self.spec]
        entry = find_entry(self.spec)
        if entry is not None:
            names += [entry.name, *entry.aliases]
        return tuple(dict.fromkeys(names))


def nice_value(text: str) -> int:
    """A Linux nice increment: 0 (off) to 19."""
    value = int(text)
    if not 0 <= value <= 19:
        raise argparse.ArgumentTypeError(f"must be from 0 to 19, got {value}")
    return value


@dataclass(frozen=True)
class Limits:
    """Per-request limits; the token and count defaults are OpenAI's and Azure's.

    The character limits allow 16 characters per allowed token (English averages about 4.5 with
    WordPiece), so no input within the token limits is refused for its characters; they let the
    server refuse an absurd request before tokenizing it.
    """

    max_inputs: int = setting(2048, "inputs per request")
    max_input_tokens: int = setting(8192, "tokens per input, counted before truncation")
    max_request_tokens: int = setting(300_000, "tokens per request, counted before truncation")
    max_input_chars: int = setting(16 * 8192, "characters per input, checked before tokenizing")
    max_request_chars: int = setting(
        16 * 300_000, "characters per request, checked before tokenizing"
    )
    max_body_bytes: int = setting(16 * 1024 * 1024, "request body size; larger bodies get 413")
    max_metadata_pairs: int = setting(16, "pairs in `metadata`")
    max_metadata_key_chars: int = setting(64, "characters per `metadata` key")
    max_metadata_value_chars: int = setting(512, "characters per `metadata` value")
    max_documents: int = setting(1000, "documents per rerank request (Cohere's own cap)")
    max_token_values: int = setting(
        16 * 1024 * 1024,
        "tokens x dimensions per token-vector response (/embed_all), checked before inference "
        "from the token counts; more gets 413 (the default is 64 MiB of float32)",
    )


@dataclass(frozen=True)
class HttpLimits:
    """What one connection may hold or take: enforced below the app (`server/http.py`)."""

    header_timeout_seconds: float = setting(
        10.0, "time to send a request's headers; after it the connection gets 408 and closes"
    )
    body_timeout_seconds: float = setting(
        60.0, "time to send a request's body once the headers are in; after it 408"
    )
    max_header_bytes: int = setting(
        32 * 1024, "bytes of request line and headers; more gets 431 and the connection closes"
    )
    max_headers: int = setting(100, "headers per request; more gets 431")
    max_connections: int = setting(
        1024, "open connections; beyond it new requests get uvicorn's 503"
    )
    max_body_bytes_in_flight: int = setting(
        256 * 1024 * 1024,
        "bytes of request bodies held at once (all requests); beyond it 503 `server_busy`",
    )


@dataclass(frozen=True)
class ServerConfig(LoadSettings):
    """A server's settings; those of how its models load (LoadSettings: providers, precision, ...)
    are the ones `embed`, `bench` and `embed-file` take too."""

    models: tuple[ModelSpec, ...] = (ModelSpec(DEFAULT_MODEL),)
    api_keys: tuple[str, ...] = ()
    # Keys whose every request is batch work, whatever it asks (`server.auth`).
    batch_api_keys: tuple[str, ...] = ()
    auto_truncate: bool = setting(
        True, "cut over-long inputs at the model's limit unless a request says truncate=false"
    )
    allow_dimensions: bool = setting(
        False, "accept `dimensions` for models not trained for it (Matryoshka)"
    )
    max_batch_requests: int = setting(
        DEFAULT_MAX_BATCH_REQUESTS, "requests sharing one batch at most"
    )
    max_queue: int = setting(
        DEFAULT_MAX_QUEUE_INPUTS, "inputs waiting per model before new requests get 429"
    )
    max_wait_seconds: float = setting(
        DEFAULT_MAX_WAIT_SECONDS,
        "ceiling of the admitted wait: a request that would finish later than this (estimated "
        "from the measured throughput) gets 429 with Retry-After, before it is tokenized; under "
        "overload a lower target that follows the measured service time applies",
    )
    drain_seconds: float = setting(
        30.0, "on SIGTERM/SIGINT, time to finish queued work before the rest gets 503"
    )
    model_nice: int = setting(
        5,
        "nice value added to the models' threads (ONNX Runtime's and the batcher's) and to the "
        "threads that tokenize and render batch-priority work, so the HTTP side, which answers "
        "/health and 429s, gets a core first when the model is busy",
        type=nice_value,
    )
    huge_pages: bool = setting(
        False,
        "before each model is ready, move the process's large memory (its weights) onto 2 MiB "
        "pages (Linux 6.1+): a request after a pause runs its model faster, a full batch ~3 % "
        "slower (docs/operations.md, CPU between requests)",
    )
    lane_session: str = setting(
        "auto",
        "a second session of each CPU model with one thread fewer, for batch-priority work while "
        "interactive work is around, so interactive requests get a core of their own beside it "
        "(its memory: the model's weights once more); auto: on at 2 to 4 model threads for graphs "
        "up to 512 MiB",
        type=str,
        choices=LANE_SESSION_MODES,
        metavar="MODE",
    )
    limits: Limits = field(default_factory=Limits)
    token_encoding: str = setting(
        "cl100k_base",
        "what token-array inputs are: tiktoken ids, decoded to text as OpenAI reads "
        "them (cl100k_base, o200k_base), or ids in the model's own vocabulary (model)",
        type=str,
        choices=TOKEN_ENCODINGS,
        metavar="NAME",
    )
    http: HttpLimits = field(default_factory=HttpLimits)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.models:
            raise ValueError("at least one model is needed")
        seen: dict[str, int] = {}
        for number, model in enumerate(self.models):
            for name in model.names:
                other = seen.setdefault(name, number)
                if other != number:
                    raise ValueError(
                        f"model name {name!r} is used by both --model "
                        f"{self.models[other].spec!r} and --model {model.spec!r}"
                    )
        # Refused rather than resolved either way: the operator meant one of the two, and a
        # guess would either let a corpus job compete with interactive traffic or slow down an
        # interactive client. The message names no key: it may end up in a log.
        both = len(set(self.api_keys) & set(self.batch_api_keys))
        if both:
            raise ValueError(
                f"{both} key(s) are listed both as API keys (--api-key, --api-key-file, "
                f"{API_KEYS_ENV}) and as batch API keys (--batch-api-key, --batch-api-key-file, "
                f"{BATCH_API_KEYS_ENV}); list each key as one or the other"
            )

    def truncates(self, requested: bool | None) -> bool:
        """Whether a request's over-long inputs are cut: what it asked, else `auto_truncate`."""
        return self.auto_truncate if requested is None else requested

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServerConfig:
        raw = json.loads(text)
        raw["models"] = tuple(ModelSpec(**m) for m in raw["models"])
        raw["api_keys"] = tuple(raw["api_keys"])
        raw["batch_api_keys"] = tuple(raw["batch_api_keys"])
        raw["limits"] = Limits(**raw["limits"])
        raw["http"] = HttpLimits(**raw["http"])
        return cls(**raw)


def declared_settings() -> list[tuple[str, Field[Any]]]:
    """Every declared setting as (owner, field): owner is "", "limits" or "http"."""
    out: list[tuple[str, Field[Any]]] = []
    for owner, kind in (("", ServerConfig), ("limits", Limits), ("http", HttpLimits)):
        out += [(owner, f) for f in settings_of(kind)]
    return out


def keys_from_env(
    environ: Mapping[str, str] | None = None, name: str = API_KEYS_ENV
) -> tuple[str, ...]:
    """API keys from the variable `name` (EMBEDSERVE_API_KEYS or EMBEDSERVE_BATCH_API_KEYS):
    comma-separated, blanks ignored."""
    value = (os.environ if environ is None else environ).get(name, "")
    return tuple(k.strip() for k in value.split(",") if k.strip())


def keys_from_file(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """API keys from a file, one a line; blank lines and lines starting with '#' are ignored.
    Keys in a file (or the environment) stay out of `ps` and shell history, unlike --api-key."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return tuple(k.strip() for k in lines if k.strip() and not k.lstrip().startswith("#"))
