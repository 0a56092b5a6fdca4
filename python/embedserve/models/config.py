"""Read a model folder's sentence-transformers and Hugging Face configs into one ModelConfig."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedserve.models.family import model_family
from embedserve.models.st_modules import STATIC, ModelConfigError, load_module_stack, read_json

# The limit reported and enforced for a StaticEmbedding whose tokenizer does not truncate:
# a mean of token rows has no position table to outgrow, only memory (131,072 tokens x 1,024
# dims gather 512 MiB of rows in one batch).
STATIC_MAX_TOKENS = 131_072

__all__ = [
    "ModelConfig",
    "ModelConfigError",
    "card_metadata",
    "is_matryoshka",
    "load_model_config",
    "max_seq_length",
]


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
    # False: prompt tokens are left out of pooling (sentence-transformers' include_prompt).
    include_prompt: bool = True
    # Dense module folders applied, in order, to the pooled vectors.
    dense_paths: tuple[Path, ...] = ()
    # A StaticEmbedding module's folder: its tokenizer.json, read without special tokens, and
    # its token table stand in for a transformer.
    static_embedding: Path | None = None
    # The family that computes it, as `embedserve models` and /info report it (models/family.py).
    family: str | None = None

    @property
    def tokenizer_dir(self) -> Path:
        return self.static_embedding or self.directory


def _read_json(path: Path) -> dict[str, Any]:
    data = read_json(path)
    return data if isinstance(data, dict) else {}


def load_model_config(directory: Path, name: str) -> ModelConfig:
    hf = _read_json(directory / "config.json")
    stack = load_module_stack(directory)
    st_config = _read_json(directory / "config_sentence_transformers.json")
    architectures = hf.get("architectures") or [STATIC if stack.static else None]
    dimension = stack.pooling.dimension or hf.get("hidden_size")
    if stack.dense_paths:
        dense_config = _read_json(stack.dense_paths[-1] / "config.json")
        dimension = dense_config.get("out_features") or dimension
    return ModelConfig(
        name=name,
        directory=directory,
        max_seq_length=(
            _static_max_length(stack.static) if stack.static else max_seq_length(directory, hf)
        ),
        pooling=stack.pooling.mode,
        normalize=stack.normalize,
        dimension=dimension,
        prompts=dict(st_config.get("prompts") or {}),
        default_prompt_name=st_config.get("default_prompt_name") or None,
        supports_dimensions=is_matryoshka(directory, st_config),
        architecture=architectures[0],
        include_prompt=stack.pooling.include_prompt,
        dense_paths=stack.dense_paths,
        static_embedding=stack.static,
        family=model_family(directory),
    )


def max_seq_length(directory: Path, hf: dict[str, Any]) -> int:
    st = _read_json(directory / "sentence_bert_config.json").get("max_seq_length")
    tok = _read_json(directory / "tokenizer_config.json").get("model_max_length")
    # GPT-2-style configs (NomicBERT) say n_positions: the compiled rotary table has that many
    # rows, so a longer text would fail inside the graph instead of being cut or refused.
    positions = hf.get("max_position_embeddings") or hf.get("n_positions")
    candidates = [v for v in (st, tok if isinstance(tok, int) and tok < 1_000_000 else None) if v]
    limit = int(candidates[0]) if candidates else int(positions or 512)
    if positions:
        limit = min(limit, int(positions))
    return limit


def _static_max_length(module: Path) -> int:
    """StaticEmbedding has no length limit of its own (max_seq_length is infinite) but keeps
    the truncation its tokenizer.json pins, as sentence-transformers does."""
    truncation = _read_json(module / "tokenizer.json").get("truncation") or {}
    return int(truncation.get("max_length") or STATIC_MAX_TOKENS)


def is_matryoshka(directory: Path, st_config: dict[str, Any]) -> bool:
    """Trained for Matryoshka cuts, as the model's configuration or card metadata says.

    Only metadata counts: a `matryoshka*` entry or `truncate_dim` in
    config_sentence_transformers.json, or a tag / loss in the model card's YAML front matter
    naming Matryoshka. README prose never does (it may well say "not Matryoshka").
    """
    for key, value in st_config.items():
        if value and ("matryoshka" in key.lower() or key == "truncate_dim"):
            return True
    front = card_metadata(directory / "README.md")
    return any("matryoshka" in tag.lower() for tag in _strings(front.get("tags")))


def card_metadata(card: Path) -> dict[str, Any]:
    """The YAML front matter of a model card (between leading `---` lines), or {}."""
    if not card.exists():
        return {}
    text = card.read_text(encoding="utf-8", errors="replace")
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    try:
        end = next(i for i, line in enumerate(lines[1:], 1) if line.strip() == "---")
    except StopIteration:
        return {}
    import yaml

    try:
        data = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []
