"""The family name embedserve reports for a model folder (`embedserve models`, TEI's `/info`).

The architectures registry decides it (``family_for``: the family that compiles config.json),
and a StaticEmbedding stack, which has no config.json, is named by its module. A folder whose
config.json names no family embedserve compiles (an ONNX graph of another architecture) has
no family: None, rather than a second guess beside the registry's.
"""

from __future__ import annotations

import json
from pathlib import Path

from embedserve.models.architectures import family_for, static_embedding
from embedserve.models.hf_config import HFConfig, UnsupportedArchitectureError
from embedserve.models.st_modules import static_embedding_dir

__all__ = ["model_family"]


def model_family(directory: Path) -> str | None:
    """``directory``'s family ("bert", "nomic_bert", "StaticEmbedding", ...), else None."""
    directory = Path(directory)
    if static_embedding_dir(directory) is not None:
        return static_embedding.NAME
    try:
        return family_for(HFConfig.read(directory / "config.json")).name
    except (FileNotFoundError, TypeError, json.JSONDecodeError, UnsupportedArchitectureError):
        return None
