"""Turn a model spec (local folder, catalog name, or hub repo id) into a local folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

from embedserve.models.catalog import catalog_names, find_entry
from embedserve.models.pull import pull

# What an embedding model needs from a hub repo; weights in either format, never both pickles.
HUB_PATTERNS = [
    "*.json",
    "1_Pooling/*",
    "onnx/model.onnx",
    "onnx/model.onnx_data",
    "model.onnx",
    "model.onnx_data",
    "model.safetensors",
    "model-*-of-*.safetensors",  # sharded checkpoints, with model.safetensors.index.json
    "vocab.txt",
    "sentencepiece.bpe.model",
]
HUB_TIMEOUT_S = 10
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelNotFoundError(LookupError):
    """The spec names no local folder, no catalog model, and no reachable hub repo."""


def resolve_model_dir(spec: str | os.PathLike[str]) -> Path:
    """The local folder holding the model that `spec` names, fetching it if needed."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    text = str(spec)
    entry = find_entry(text)
    if entry is not None:
        return pull(entry)
    if _HUB_ID.match(text) and not path.exists():
        return _download_from_hub(text)
    raise ModelNotFoundError(
        f"model {text!r} is not a folder, not a catalog name ({', '.join(catalog_names())}) "
        "and not a hub repo id like 'BAAI/bge-small-en-v1.5'"
    )


def _download_from_hub(repo_id: str) -> Path:
    from huggingface_hub import HfApi, constants, snapshot_download

    endpoint = constants.ENDPOINT
    try:
        # repo_info with an explicit timeout first: snapshot_download's own metadata call has
        # none, so a hub that accepts the connection and never answers would hang the start.
        HfApi(endpoint=endpoint).repo_info(repo_id, timeout=HUB_TIMEOUT_S)
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS, etag_timeout=HUB_TIMEOUT_S))
    except Exception as exc:  # the hub's errors come from several HTTP stacks; all mean "not here"
        cached = _cached_snapshot(repo_id)
        if cached is not None:
            return cached
        raise ModelNotFoundError(
            f"could not download {repo_id!r} from {endpoint}: {type(exc).__name__}: {exc}. "
            "Without network access, pass a local model folder or a catalog name "
            f"({', '.join(catalog_names())})."
        ) from exc


def _cached_snapshot(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS, local_files_only=True))
    except Exception:  # nothing cached: the caller reports the download error
        return None
