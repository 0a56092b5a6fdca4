"""A ColBERT (late-interaction) model folder as PyLate saves it: what to read and its defaults.

PyLate writes a sentence-transformers folder whose modules are the Transformer and one or more
`Dense` projections applied to every token (no Pooling), and puts its own settings in
config_sentence_transformers.json: the `[Q] `/`[D] ` markers (added tokens, inserted after the
first special token), query and document lengths, query expansion with the mask token, whether
the expansion tokens are attended to, and the punctuation skiplist dropped from documents. The
defaults below are PyLate's (`pylate.models.ColBERT.__init__`) for a key a folder leaves out.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from embedserve.models.config import usable_positions
from embedserve.models.st_modules import ModelConfigError, class_name, read_json, read_modules

DEFAULT_QUERY_LENGTH = 32
DEFAULT_DOCUMENT_LENGTH = 180


@dataclass(frozen=True)
class ColbertConfig:
    directory: Path
    query_prefix: str
    document_prefix: str
    query_length: int
    document_length: int
    do_query_expansion: bool
    attend_to_expansion_tokens: bool
    skiplist_words: tuple[str, ...]
    dense_paths: tuple[Path, ...]


def is_late_interaction(directory: Path) -> bool:
    """True for a PyLate folder: its config names MaxSim or a query prefix, or its modules project
    a Transformer's tokens with Dense and never pool."""
    st = read_json(directory / "config_sentence_transformers.json") or {}
    if st.get("similarity_fn_name") == "MaxSim" or "query_prefix" in st:
        return True
    kinds = [class_name(str(m.get("type", ""))) for m in _modules(directory)]
    # A Transformer first: a StaticEmbedding with a Dense after it is an embedder, not a ColBERT.
    return kinds[:1] == ["Transformer"] and "Dense" in kinds and "Pooling" not in kinds


def load_colbert_config(directory: Path) -> ColbertConfig:
    st = read_json(directory / "config_sentence_transformers.json") or {}
    dense = []
    for module in sorted(_modules(directory), key=lambda m: int(m.get("idx", 0))):
        kind = class_name(str(module.get("type", "")))
        if kind == "Dense":
            dense.append(directory / str(module.get("path") or ""))
        elif kind not in ("Transformer", "Dropout"):
            raise ModelConfigError(
                f"{directory.name}: module {module.get('type')!r} is not supported in a ColBERT "
                "model (supported: Transformer, then Dense projections)"
            )
    if not dense:
        raise ModelConfigError(f"{directory.name}: a ColBERT model needs a Dense projection")
    # PyLate prepends the default prompt to every text it encodes; this reader has no prompts,
    # so such a folder is refused rather than given other vectors than PyLate's.
    default = st.get("default_prompt_name")
    prompt = (st.get("prompts") or {}).get(default) if default else None
    if prompt:
        raise ModelConfigError(
            f"{directory.name}: its default_prompt_name {default!r} puts {prompt!r} before every "
            "text (PyLate); prompts are not supported for ColBERT models"
        )
    expansion = bool(_get(st, "do_query_expansion", True))
    query_length = int(_get(st, "query_length", DEFAULT_QUERY_LENGTH))
    document_length = int(_get(st, "document_length", DEFAULT_DOCUMENT_LENGTH))
    # PyLate takes the lengths as saved and fails on a text past the position table ("size of
    # tensor a (100) must match ... b (64)"); as an embedder's max_seq_length, they are capped at
    # the positions a text can use, so longer texts are cut (or refused) instead.
    hf = read_json(directory / "config.json")
    positions = usable_positions(directory, hf) if isinstance(hf, dict) else None
    if positions:
        query_length = min(query_length, positions)
        document_length = min(document_length, positions)
    if min(query_length, document_length) < 4:
        raise ModelConfigError(f"{directory.name}: query_length and document_length must be >= 4")
    return ColbertConfig(
        directory=directory,
        query_prefix=str(_get(st, "query_prefix", "[Q] ")),
        document_prefix=str(_get(st, "document_prefix", "[D] ")),
        query_length=query_length,
        document_length=document_length,
        do_query_expansion=expansion,
        # Without expansion nothing is expanded, so nothing is attended to (as PyLate sets it).
        attend_to_expansion_tokens=expansion
        and bool(_get(st, "attend_to_expansion_tokens", False)),
        skiplist_words=tuple(str(w) for w in _get(st, "skiplist_words", list(string.punctuation))),
        dense_paths=tuple(dense),
    )


def _get(config: dict, key: str, default: object) -> object:
    """PyLate's fallback: a missing or null key takes the default."""
    value = config.get(key)
    return default if value is None else value


def _modules(directory: Path) -> list[dict]:
    return read_modules(directory)
