"""config.json as transformers 4.x and 5.x write it, behind one small reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embedserve.fileio import read_json
from embedserve.models.st_modules import ModelConfigError


class UnsupportedArchitectureError(ValueError):
    """config.json describes a model (or a variant of one) the compiler cannot translate."""


class HFConfig:
    """The raw config.json with typed getters that accept either version's field names."""

    def __init__(self, raw: dict[str, Any], path: Path) -> None:
        self.raw = raw
        self.path = path

    @classmethod
    def read(cls, path: Path) -> HFConfig:
        if not path.exists():
            raise FileNotFoundError(f"no config.json at {path}")
        raw = read_json(path)
        if not isinstance(raw, dict):
            raise ModelConfigError(
                f"{path} is not a JSON object (transformers' config.json is one)"
            )
        return cls(raw, path)

    @property
    def model_type(self) -> str | None:
        return self.raw.get("model_type")

    @property
    def architectures(self) -> list[str]:
        found = self.raw.get("architectures") or []
        # A bare name is one architecture, not its letters; a number is a name no family has.
        return [found] if isinstance(found, str) else [str(name) for name in found]

    @property
    def dtype(self) -> str | None:
        """The checkpoint's declared dtype (5.x "dtype", 4.x "torch_dtype"); informational:
        the compiler upcasts whatever safetensors actually stores to float32."""
        return self.raw.get("dtype") or self.raw.get("torch_dtype")

    def get(self, *names: str, default: Any = None) -> Any:
        """The first of ``names`` present (families renamed fields across releases)."""
        for name in names:
            if self.raw.get(name) is not None:
                return self.raw[name]
        return default

    def int(self, *names: str, default: int | None = None) -> int:
        """A whole-number field (32 or 32.0; not "32", true or 0.5: transformers' modules could
        not be built from those either)."""
        value = self._required(names, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not float(value).is_integer()
        ):
            raise ModelConfigError(self._wrong(names, value, "a whole number"))
        return int(value)

    def count(self, *names: str, default: int | None = None) -> int:
        """A size that must be at least 1 (heads, layers, widths): 0 would divide by zero."""
        value = self.int(*names, default=default)
        if value < 1:
            raise ModelConfigError(self._wrong(names, value, "at least 1"))
        return value

    def float(self, *names: str, default: float | None = None) -> float:
        value = self._required(names, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ModelConfigError(self._wrong(names, value, "a number"))
        return float(value)

    def _required(self, names: tuple[str, ...], default: Any) -> Any:
        value = self.get(*names, default=default)
        if value is None:
            raise ValueError(f"{self.path} lacks {' / '.join(names)}, which this model needs")
        return value

    def _wrong(self, names: tuple[str, ...], value: Any, wanted: str) -> str:
        name = next((n for n in names if self.raw.get(n) is not None), names[0])
        return f"{self.path}: {name} is {value!r}; it must be {wanted}"

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        """A string field restricted to what the compiler implements."""
        value = self.raw.get(name, default)
        value = default if value is None else value
        if value not in allowed:
            raise UnsupportedArchitectureError(
                f"{self.path}: {name} {value!r} is not supported; supported: {', '.join(allowed)}"
            )
        return value

    def layer_types(self, num_layers: int, default: list[str]) -> list[str]:
        """Per-layer attention kinds ("full_attention" / "sliding_attention")."""
        types = self.raw.get("layer_types") or default
        if len(types) != num_layers:
            raise ValueError(
                f"{self.path}: layer_types has {len(types)} entries for {num_layers} layers"
            )
        return list(types)

    def rope_parameters(self, layer_type: str | None = None) -> dict[str, Any]:
        """Rotary settings as one dict with "rope_type", "rope_theta" and scaling fields.

        5.x writes ``rope_parameters`` (per layer type for models that mix them); 4.x writes
        ``rope_theta`` beside an optional ``rope_scaling`` whose kind is "rope_type" or "type".
        """
        params = self.raw.get("rope_parameters")
        if isinstance(params, dict) and layer_type is not None and layer_type in params:
            params = params[layer_type]
        merged: dict[str, Any] = {}
        if isinstance(params, dict) and not any(isinstance(v, dict) for v in params.values()):
            merged.update(params)
        scaling = self.raw.get("rope_scaling")
        if isinstance(scaling, dict):
            for key, value in scaling.items():
                merged.setdefault(key, value)
        if "type" in merged and "rope_type" not in merged:
            merged["rope_type"] = merged.pop("type")
        merged.setdefault("rope_type", "default")
        if "rope_theta" not in merged and self.raw.get("rope_theta") is not None:
            merged["rope_theta"] = self.raw["rope_theta"]
        return merged
