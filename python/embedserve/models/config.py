"""Read a model folder's sentence-transformers and Hugging Face configs into one ModelConfig."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

POOLING_MODES = ("mean", "cls", "last")


class ModelConfigError(ValueError):
    """The model folder's configuration asks for something embedserve cannot do."""


@dataclass(frozen=True)
class ModelConfig:
    name: str
    directory: Path
    max_seq_length: int
    pooling: str
    normalize: bool
    dimension: int | None
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    supports_dimensions: bool = False
    architecture: str | None = None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    with path.open(encoding="utf-8") as f:
        data = json.load(f)
    return data if isinstance(data, dict) else {"_list": data}


def load_model_config(directory: Path, name: str) -> ModelConfig:
    hf = _read_json(directory / "config.json")
    modules = _read_json(directory / "modules.json").get("_list", [])
    pooling_path, normalize = _modules_layout(modules)
    pooling_config = _read_json(directory / pooling_path / "config.json")
    st_config = _read_json(directory / "config_sentence_transformers.json")
    architectures = hf.get("architectures") or [None]
    return ModelConfig(
        name=name,
        directory=directory,
        max_seq_length=_max_seq_length(directory, hf),
        pooling=_pooling_mode(pooling_config),
        normalize=normalize,
        dimension=pooling_config.get("word_embedding_dimension") or hf.get("hidden_size"),
        prompts=dict(st_config.get("prompts") or {}),
        default_prompt_name=st_config.get("default_prompt_name") or None,
        supports_dimensions=_is_matryoshka(directory, st_config),
        architecture=architectures[0],
    )


def _modules_layout(modules: list[dict[str, Any]]) -> tuple[str, bool]:
    """Where the Pooling config lives, and whether a Normalize module follows it."""
    if not modules:
        # A bare transformer folder: TEI's defaults (mean pooling, normalized output).
        return "1_Pooling", True
    pooling_path = "1_Pooling"
    normalize = False
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith(".Pooling"):
            pooling_path = module.get("path") or pooling_path
        elif kind.endswith(".Normalize"):
            normalize = True
    return pooling_path, normalize


def _pooling_mode(config: dict[str, Any]) -> str:
    if not config:
        return "mean"
    named = config.get("pooling_mode")
    if isinstance(named, str):
        aliases = {"mean": "mean", "cls": "cls", "lasttoken": "last", "last": "last"}
        if named in aliases:
            return aliases[named]
        raise ModelConfigError(f"pooling mode {named!r} is not supported (supported: {POOLING_MODES})")
    flags = {
        "cls": config.get("pooling_mode_cls_token"),
        "mean": config.get("pooling_mode_mean_tokens"),
        "last": config.get("pooling_mode_lasttoken"),
    }
    unsupported = [k for k in ("pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                               "pooling_mode_weightedmean_tokens") if config.get(k)]
    chosen = [mode for mode, on in flags.items() if on]
    if unsupported or len(chosen) != 1:
        raise ModelConfigError(
            f"pooling config {config} selects {chosen + unsupported}; embedserve supports exactly "
            f"one of {POOLING_MODES}"
        )
    return chosen[0]


def _max_seq_length(directory: Path, hf: dict[str, Any]) -> int:
    st = _read_json(directory / "sentence_bert_config.json").get("max_seq_length")
    tok = _read_json(directory / "tokenizer_config.json").get("model_max_length")
    positions = hf.get("max_position_embeddings")
    candidates = [v for v in (st, tok if isinstance(tok, int) and tok < 1_000_000 else None) if v]
    limit = int(candidates[0]) if candidates else int(positions or 512)
    if positions:
        limit = min(limit, int(positions))
    return limit


def _is_matryoshka(directory: Path, st_config: dict[str, Any]) -> bool:
    """Trained with MatryoshkaLoss, as the model card or config says; only then is cutting safe."""
    if st_config.get("matryoshka_dims") or st_config.get("truncate_dim"):
        return True
    card = directory / "README.md"
    if card.exists():
        text = card.read_text(encoding="utf-8", errors="replace").lower()
        return "matryoshka" in text
    return False
