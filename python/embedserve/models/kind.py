"""What a model folder holds: an embedder (encoder + pooling) or a reranker (a cross-encoder).

config.json's `architectures` says it: a `*ForSequenceClassification` head scores pairs, anything
else is served as an encoder whose states are pooled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EMBEDDER = "embedder"
RERANKER = "reranker"
# Token vectors scored by MaxSim (PyLate's ColBERT layout: models/colbert_config.py).
LATE_INTERACTION = "late-interaction"
KINDS = (EMBEDDER, RERANKER, LATE_INTERACTION)

# transformers' RoBERTa family (and MPNet) counts positions from padding_idx + 1, so
# padding_idx + 1 of max_position_embeddings are never usable by text.
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "mpnet")


def read_hf_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def is_classifier(hf: dict[str, Any]) -> bool:
    return any(str(a).endswith("ForSequenceClassification") for a in hf.get("architectures") or [])


def model_kind(directory: Path) -> str:
    if is_classifier(read_hf_config(directory)):
        return RERANKER
    from embedserve.models.colbert_config import is_late_interaction

    return LATE_INTERACTION if is_late_interaction(directory) else EMBEDDER


@dataclass(frozen=True)
class RerankerConfig:
    name: str
    directory: Path
    max_length: int
    num_labels: int
    architecture: str
    labels: tuple[str, ...]


def load_reranker_config(
    directory: Path, name: str, max_length: int | None = None
) -> RerankerConfig:
    """The cross-encoder's limit and labels, from config.json and tokenizer_config.json.

    The limit is what `CrossEncoder` truncates to: the tokenizer's `model_max_length`, capped by
    the positions the model has (`max_length` overrides both).
    """
    hf = read_hf_config(directory)
    if not is_classifier(hf):
        raise ValueError(
            f"{directory}: config.json's architectures {hf.get('architectures')} name no "
            "*ForSequenceClassification head; this is not a cross-encoder"
        )
    id2label = hf.get("id2label") or {}
    num_labels = int(hf.get("num_labels") or len(id2label) or 1)
    labels = tuple(
        str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(num_labels)
    )
    return RerankerConfig(
        name=name,
        directory=directory,
        max_length=max_length or _max_length(directory, hf),
        num_labels=num_labels,
        architecture=str(hf["architectures"][0]),
        labels=labels,
    )


def _max_length(directory: Path, hf: dict[str, Any]) -> int:
    positions = hf.get("max_position_embeddings")
    if positions and hf.get("model_type") in _OFFSET_POSITIONS:
        positions = int(positions) - int(hf.get("pad_token_id", 1)) - 1
    tok_path = directory / "tokenizer_config.json"
    tok = json.loads(tok_path.read_text(encoding="utf-8")) if tok_path.exists() else {}
    limit = tok.get("model_max_length")
    if not isinstance(limit, int) or limit >= 1_000_000:
        limit = None
    candidates = [int(v) for v in (limit, positions) if v]
    return min(candidates) if candidates else 512
