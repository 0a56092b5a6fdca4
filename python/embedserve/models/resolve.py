"""Turn a model spec (local folder, catalog name, or hub repo id) into a local folder."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from fnmatch import fnmatch
from pathlib import Path

from embedserve.models.catalog import catalog_names, find_entry
from embedserve.models.pull import pull

# What an embedding model needs from a hub repo: configs, tokenizer, model card (Matryoshka
# metadata), the sentence-transformers module folders (1_Pooling/, 2_Dense/ …), and weights.
CONFIG_PATTERNS = ["*.json", "README.md", "vocab.txt", "sentencepiece.bpe.model", "[0-9]_*/*"]
# A shipped graph, with its weights in a side file when over protobuf's 2 GiB (bge-m3).
ONNX_WEIGHTS = ["model.onnx", "model.onnx_data", "onnx/model.onnx", "onnx/model.onnx_data"]
SAFETENSORS_WEIGHTS = ["model.safetensors", "model-*-of-*.safetensors"]
# Older repos' only weights; taken only where a repo has no safetensors (as transformers does).
PICKLE_WEIGHTS = ["pytorch_model.bin", "pytorch_model-*-of-*.bin"]
# A StaticEmbedding module's table, in the module folder sentence-transformers 3.x-5.x wrote.
STATIC_WEIGHTS = ["0_StaticEmbedding/model.safetensors"]
HUB_PATTERNS = CONFIG_PATTERNS + ONNX_WEIGHTS + SAFETENSORS_WEIGHTS
HUB_TIMEOUT_S = 10
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelNotFoundError(LookupError):
    """The spec names no local folder, no catalog model, and no reachable hub repo."""


def resolve_model_dir(spec: str | os.PathLike[str], *, compile: bool = False) -> Path:
    """The local folder holding the model that `spec` names, fetching it if needed.

    A hub repo that ships an ONNX graph gives only that graph, unless `compile` asks for
    its safetensors weights (to compile them) instead.
    """
    if not isinstance(spec, str | os.PathLike):
        # Before pathlib, whose TypeError ("expected str, bytes or os.PathLike") names no model.
        raise TypeError(
            "the model must be a folder, a catalog name or a hub repo id (a str or a path), "
            f"not {type(spec).__name__}"
        )
    text = str(spec)
    path = Path(spec).expanduser()
    # Path("") is ".": a blank name would load whatever the current folder holds.
    if text.strip() and path.is_dir():
        return path.resolve()
    entry = find_entry(text)
    if entry is not None:
        return pull(entry)
    if _HUB_ID.match(text) and not path.exists():
        return _download_from_hub(text, compile=compile)
    raise ModelNotFoundError(
        f"model {text!r} is not a folder, not a catalog name ({', '.join(catalog_names())}) "
        "and not a hub repo id like 'BAAI/bge-small-en-v1.5'"
    )


def hub_files(files: Iterable[str], *, compile: bool = False) -> list[str]:
    """The files of a repo holding `files` that embedserve downloads.

    Configs always; then one set of weights: the shipped ONNX graph (the root one if there are
    two) unless `compile` is asked or there is none, else the safetensors, else (older repos)
    pytorch_model.bin. In a module folder,
    a pickle is taken only when no model.safetensors sits beside it.
    """
    files = list(files)
    has = set(files)
    onnx_dir = "" if "model.onnx" in has else "onnx/" if "onnx/model.onnx" in has else None
    if onnx_dir is not None and not compile:
        weights = [onnx_dir + "model.onnx", onnx_dir + "model.onnx_data"]
    elif any(fnmatch(path, p) for path in files for p in SAFETENSORS_WEIGHTS):
        weights = SAFETENSORS_WEIGHTS
    else:
        weights = PICKLE_WEIGHTS
    chosen = []
    for path in files:
        if not any(fnmatch(path, p) for p in CONFIG_PATTERNS + weights):
            continue
        folder, _, name = path.rpartition("/")
        if name == "pytorch_model.bin" and f"{folder}/model.safetensors" in has:
            continue
        if fnmatch(path, "[0-9]_*/*") and name.endswith(".onnx"):
            continue
        chosen.append(path)
    return chosen


def _download_from_hub(repo_id: str, *, compile: bool = False) -> Path:
    from huggingface_hub import HfApi, constants, snapshot_download

    endpoint = constants.ENDPOINT
    try:
        # repo_info with an explicit timeout first: snapshot_download's own metadata call has
        # none, so a hub that accepts the connection and never answers would hang the start.
        info = HfApi(endpoint=endpoint).repo_info(repo_id, timeout=HUB_TIMEOUT_S)
        wanted = hub_files((s.rfilename for s in info.siblings or []), compile=compile)
        weights = ONNX_WEIGHTS + SAFETENSORS_WEIGHTS + PICKLE_WEIGHTS + STATIC_WEIGHTS
        if not any(fnmatch(f, p) for f in wanted for p in weights):
            raise ModelNotFoundError(
                f"hub repo {repo_id!r} has no "
                + (
                    "model.safetensors or pytorch_model.bin to compile"
                    if compile
                    else "model.onnx, model.safetensors or pytorch_model.bin"
                )
            )
        # Exact names as patterns ("[" would be a pattern character; no model file has one).
        return Path(snapshot_download(repo_id, allow_patterns=wanted, etag_timeout=HUB_TIMEOUT_S))
    except ModelNotFoundError:
        raise
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
    except Exception:  # noqa: BLE001 - nothing cached: the caller reports the download error
        return None
