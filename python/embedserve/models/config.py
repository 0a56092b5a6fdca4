"""Read a model folder's sentence-transformers and Hugging Face configs into one ModelConfig."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedserve.models.architectures import family_for
from embedserve.models.family import model_family
from embedserve.models.hf_config import HFConfig, UnsupportedArchitectureError
from embedserve.models.st_modules import (
    STATIC,
    ModelConfigError,
    load_module_stack,
    read_json,
    whole_number,
)
from embedserve.tokenizer_pipeline import transformer_config

# The limit reported and enforced for a StaticEmbedding whose tokenizer does not truncate (and
# for an inference-free SPLADE's query table whose tokenizer has no limit, sparse.StaticQuery):
# a mean of token rows has no position table to outgrow, only memory (131,072 tokens x 1,024
# dims gather 512 MiB of rows in one batch).
STATIC_MAX_TOKENS = 131_072
# sentence-transformers (6.3: SentenceTransformer, SparseEncoder and MultiVectorEncoder alike)
# gives every model these prompts, empty, unless it saved its own under the same names.
ST_DEFAULT_PROMPTS = {"query": "", "document": ""}

__all__ = [
    "ST_DEFAULT_PROMPTS",
    "ModelConfig",
    "ModelConfigError",
    "card_metadata",
    "is_matryoshka",
    "load_model_config",
    "max_seq_length",
    "read_prompts",
    "usable_positions",
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
    # A SparseEncoder's saved max_active_dims: the `top_k` its vectors are pruned to when a
    # call names none, as sentence-transformers' SparseEncoder.encode prunes them.
    max_active_dims: int | None = None
    # config_sentence_transformers.json's truncate_dim: sentence-transformers cuts every vector
    # to it unless a call asks otherwise.
    truncate_dim: int | None = None

    @property
    def tokenizer_dir(self) -> Path:
        return self.static_embedding or self.directory


def _read_json(path: Path) -> dict[str, Any]:
    data = read_json(path)
    return data if isinstance(data, dict) else {}


def load_model_config(directory: Path, name: str) -> ModelConfig:
    hf = _read_json(directory / "config.json")
    stack = load_module_stack(directory)
    st_path = directory / "config_sentence_transformers.json"
    st_config = _read_json(st_path)
    prompts, default_prompt_name = read_prompts(st_path, st_config)
    architectures = hf.get("architectures") or [STATIC if stack.static else None]
    dimension = stack.pooling.width(hf.get("hidden_size"))
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
        prompts=prompts,
        default_prompt_name=default_prompt_name,
        supports_dimensions=is_matryoshka(directory, st_config),
        architecture=architectures[0],
        include_prompt=stack.pooling.include_prompt,
        dense_paths=stack.dense_paths,
        static_embedding=stack.static,
        family=model_family(directory),
        truncate_dim=read_truncate_dim(st_path, st_config),
    )


def read_truncate_dim(path: Path, st_config: dict[str, Any]) -> int | None:
    """The width sentence-transformers (3.x on) cuts every vector of the model to, as saved in
    config_sentence_transformers.json (`st_config`, read from `path`); None where it says none."""
    value = st_config.get("truncate_dim")
    return None if value is None else whole_number(value, path, "truncate_dim")


def read_prompts(path: Path, st_config: dict[str, Any]) -> tuple[dict[str, str], str | None]:
    """config_sentence_transformers.json's (`st_config`, read from `path`) prompts and
    default_prompt_name, checked as sentence-transformers checks them when it loads the folder.

    A default that names no prompt would otherwise fail every call that names none, as if the
    caller had asked for it; a prompt that is not text, every call that uses it.
    """
    prompts = st_config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(
        isinstance(text, str) or text is None for text in prompts.values()
    ):
        raise ModelConfigError(
            f'{path}: prompts must map names to texts, like {{"query": "query: "}}; got {prompts!r}'
        )
    # sentence-transformers reads a null prompt as an empty one.
    prompts = {str(name): text or "" for name, text in prompts.items()}
    default = st_config.get("default_prompt_name") or None
    known = {**ST_DEFAULT_PROMPTS, **prompts}
    if default is not None and (not isinstance(default, str) or default not in known):
        raise ModelConfigError(
            f"{path}: default_prompt_name {default!r} is not one of its prompts "
            f"({', '.join(sorted(known))}); sentence-transformers refuses to load it too"
        )
    return prompts, default


def max_seq_length(directory: Path, hf: dict[str, Any]) -> int:
    """The most tokens (special ones included) a text of an embedder, sparse model or
    cross-encoder may have: sentence-transformers' limit, the module config's max_seq_length
    (sentence_bert_config.json), else tokenizer_config.json's model_max_length (not the 1e30 that
    means none), else the position table's; never more than a text can use (`usable_positions`).

    sentence-transformers caps only the tokenizer's limit, and by max_position_embeddings
    itself, so it reports 514 for an XLM-R table of 514 rows whose tokens start at row 2; a text
    of 513 tokens fails in it ("index 514 is out of bounds"). Here it is cut (or refused) at 512.
    """
    st = transformer_config(directory).get("max_seq_length")
    if st is not None and (isinstance(st, bool) or not isinstance(st, int) or st < 1):
        raise ModelConfigError(
            f"{directory}: sentence_bert_config.json's max_seq_length is {st!r}; it must be a "
            "whole number of tokens, at least 1"
        )
    tok = _read_json(directory / "tokenizer_config.json").get("model_max_length")
    tok = tok if isinstance(tok, int) and tok < 1_000_000 else None
    positions = usable_positions(directory, hf)
    limit = int(st or tok or positions or 512)
    return min(limit, positions) if positions else limit


def check_max_length(directory: Path, max_length: int) -> int:
    """A caller's `max_length` (LoadOptions), refused when the loading, not at the first long text,
    past the positions a text of `directory`'s model can use: the graph fails there with ONNX
    Runtime's "Attempting to broadcast an axis" on any longer text."""
    positions = usable_positions(directory, _read_json(directory / "config.json"))
    if positions is not None and max_length > positions:
        raise ValueError(
            f"max_length must be at most {positions}, the positions a text of this model can use "
            f"({directory / 'config.json'}), got {max_length}"
        )
    return max_length


def usable_positions(directory: Path, hf: dict[str, Any]) -> int | None:
    """The rows of the position table a text can reach, None if config.json has no table size.

    GPT-2-style configs (NomicBERT) say n_positions: the compiled rotary table has that many
    rows, so a longer text would fail inside the graph instead of being cut or refused. Families
    whose positions start past 0 (RoBERTa, XLM-R, CamemBERT and MPNet count from padding_idx + 1;
    `Family.first_position`) leave that many rows unused.
    """
    if not (hf.get("max_position_embeddings") or hf.get("n_positions")):
        return None
    config = HFConfig(hf, directory / "config.json")
    positions = config.count("max_position_embeddings", "n_positions")
    try:
        first = family_for(config).first_position(config)
    except UnsupportedArchitectureError:  # an ONNX graph of a family we do not compile
        first = 0
    return positions - first


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
