"""Everything a server needs to start, as plain data that survives the trip to a worker process."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from embedserve.batching import DEFAULT_MAX_BATCH_REQUESTS, DEFAULT_MAX_QUEUE_INPUTS
from embedserve.models import DEFAULT_MODEL, find_entry

API_KEYS_ENV = "EMBEDSERVE_API_KEYS"


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


@dataclass(frozen=True)
class Limits:
    """Per-request limits; the defaults are OpenAI's and Azure's."""

    max_inputs: int = 2048
    max_input_tokens: int = 8192
    max_request_tokens: int = 300_000
    max_body_bytes: int = 16 * 1024 * 1024
    max_metadata_pairs: int = 16
    max_metadata_key_chars: int = 64
    max_metadata_value_chars: int = 512


@dataclass(frozen=True)
class ServerConfig:
    models: tuple[ModelSpec, ...] = (ModelSpec(DEFAULT_MODEL),)
    api_keys: tuple[str, ...] = ()
    auto_truncate: bool = True
    allow_dimensions: bool = False
    max_batch_tokens: int | None = None  # None: the engine's default for its provider
    max_batch_requests: int = DEFAULT_MAX_BATCH_REQUESTS
    max_queue: int = DEFAULT_MAX_QUEUE_INPUTS
    providers: str | None = None
    intra_op_threads: int | None = None
    quantize: str | None = None
    precision: str | None = None  # None: fp32 (or int8 when quantize says so)
    runtime: str | None = None  # None: the faster runtime for the precision here
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
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

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServerConfig:
        raw = json.loads(text)
        raw["models"] = tuple(ModelSpec(**m) for m in raw["models"])
        raw["api_keys"] = tuple(raw["api_keys"])
        raw["limits"] = Limits(**raw["limits"])
        return cls(**raw)


def keys_from_env(environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """API keys from EMBEDSERVE_API_KEYS (comma-separated; blanks ignored)."""
    value = (os.environ if environ is None else environ).get(API_KEYS_ENV, "")
    return tuple(k.strip() for k in value.split(",") if k.strip())
