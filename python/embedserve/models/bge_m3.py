"""BGE-M3's folder: an XLM-R checkpoint with FlagEmbedding's extra heads saved beside it as torch
files (`sparse_linear.pt`: Linear(hidden, 1); `colbert_linear.pt`: Linear(hidden, dim)).

The one place that knows the layout: which heads a folder has, how a head's weights are read
(without torch, `torch_checkpoint.read_torch_checkpoint`), and which special tokens FlagEmbedding
leaves out of the sparse vector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedserve.models.st_modules import ModelConfigError, read_json
from embedserve.models.torch_checkpoint import read_torch_checkpoint

SPARSE_LINEAR = "sparse_linear.pt"
COLBERT_LINEAR = "colbert_linear.pt"
HEAD_FILES = (SPARSE_LINEAR, COLBERT_LINEAR)
# FlagEmbedding's M3Embedder drops these tokens' weights from the lexical weights.
DROPPED_SPECIALS = ("cls_token", "eos_token", "pad_token", "unk_token")


def heads(directory: Path) -> tuple[str, ...]:
    """The BGE-M3 head files `directory` holds (none: not a BGE-M3 folder)."""
    return tuple(name for name in HEAD_FILES if (directory / name).exists())


def is_bge_m3(directory: Path) -> bool:
    return bool(heads(directory))


def read_linear(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """A torch Linear's state dict: weight float32 [out, in], bias [out] or None."""
    tensors = read_torch_checkpoint(path)
    weight = tensors.get("weight")
    if weight is None or weight.ndim != 2:
        raise ModelConfigError(f"{path}: no 2-D `weight` (a torch Linear's state dict)")
    bias = tensors.get("bias")
    return (
        np.ascontiguousarray(weight, dtype=np.float32),
        None if bias is None else np.asarray(bias, dtype=np.float32),
    )


def dropped_special_tokens(directory: Path) -> list[str]:
    """The strings of the special tokens FlagEmbedding drops, as the tokenizer's configs name
    them (tokenizer_config.json first, then special_tokens_map.json)."""
    found: dict[str, str] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        config = read_json(directory / name) or {}
        for key in DROPPED_SPECIALS:
            value = config.get(key)
            if isinstance(value, dict):  # {"content": "<s>", "lstrip": ...}
                value = value.get("content")
            if isinstance(value, str):
                found[key] = value
    return list(found.values())
