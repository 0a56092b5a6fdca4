"""Read a checkpoint (safetensors or pytorch_model.bin, single file or sharded) as float32 tensors."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from embedserve.models.st_modules import ModelConfigError, read_json
from embedserve.models.torch_checkpoint import read_torch_checkpoint

logger = logging.getLogger(__name__)

SINGLE_FILE = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"
# What transformers saved before safetensors (older hub repos ship nothing else): torch zips.
PICKLE_FILE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"


def weight_files(model_dir: Path) -> list[Path]:
    """The checkpoint files holding ``model_dir``'s weights, in a stable order: safetensors
    (single or sharded) where there are any, as transformers prefers them, else pytorch_model.bin
    (single or sharded).

    Raises FileNotFoundError naming the layouts when there is none.
    """
    for single, index in ((SINGLE_FILE, SHARD_INDEX), (PICKLE_FILE, PICKLE_INDEX)):
        if (model_dir / single).exists():
            return [model_dir / single]
        if (model_dir / index).exists():
            return _shards(model_dir / index)
    raise FileNotFoundError(
        f"no weights at {model_dir / SINGLE_FILE} (nor a sharded {SHARD_INDEX}, nor {PICKLE_FILE})"
    )


def _shards(index: Path) -> list[Path]:
    """The files a shard index's weight_map names, all of which must be there."""
    listing = read_json(index)
    weight_map = listing.get("weight_map") if isinstance(listing, dict) else None
    if not isinstance(weight_map, dict):
        raise ModelConfigError(f"{index} has no weight_map object (tensor name -> shard file)")
    shards = sorted(set(weight_map.values()))
    missing = [s for s in shards if not (index.parent / s).exists()]
    if not shards or missing:
        raise FileNotFoundError(
            f"{index} names shards that are not there: {missing or 'none listed'}"
        )
    return [index.parent / s for s in shards]


class _TorchCheckpoint:
    """A pytorch_model.bin read whole (read_torch_checkpoint), behind safe_open's two methods."""

    def __init__(self, path: Path) -> None:
        self._tensors = read_torch_checkpoint(path)

    def keys(self) -> list[str]:
        return list(self._tensors)

    def get_tensor(self, key: str) -> np.ndarray:
        return self._tensors[key]


def open_checkpoint(path: Path) -> Any:
    """One checkpoint file (weight_files'), read with safe_open's keys() and get_tensor()."""
    return _TorchCheckpoint(path) if path.suffix == ".bin" else open_safetensors(path)


def open_safetensors(path: Path) -> Any:
    """`safe_open(path)` (numpy); a ModelConfigError naming the file when it cannot be read.

    safetensors raises its own SafetensorError (no ValueError or OSError) for a truncated
    download or a file that is not safetensors at all, which would reach users as a traceback.
    """
    # Registers numpy's "bfloat16" dtype so safetensors can hand back bf16 checkpoints.
    import ml_dtypes  # noqa: F401
    from safetensors import safe_open

    try:
        return safe_open(str(path), framework="numpy")
    except Exception as exc:  # SafetensorError, or an OSError reading it
        raise ModelConfigError(
            f"{path} is not a readable safetensors file (truncated or corrupt?): {exc}"
        ) from exc


def load_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor in `path` by name (a small module's file: a Dense head, a token table)."""
    handle = open_safetensors(path)
    return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118


class Weights:
    """A checkpoint's tensors by name, read lazily and upcast to float32.

    Architectures ask for names as the bare encoder stores them ("encoder.layer.0...");
    checkpoints saved from a ``*For*`` class nest those under a prefix ("bert.", "roberta.",
    "model.", "mpnet."), which ``anchor`` locates once. Names outside the prefix (a task
    head's "classifier.weight") stay reachable by their full name.
    """

    def __init__(self, model_dir: Path, anchor: str) -> None:
        self.source = model_dir
        self.used: set[str] = set()
        self._anchor = anchor
        self._opened: tuple[list, dict[str, int], str] | None = None

    def _open(self) -> tuple[list, dict[str, int], str]:
        # Opened on first use, so that architectures validate config.json before a missing
        # or mismatched checkpoint is reported.
        if self._opened is None:
            handles = [open_checkpoint(f) for f in weight_files(self.source)]
            where: dict[str, int] = {}
            for n, handle in enumerate(handles):
                for key in handle.keys():  # noqa: SIM118 (safe_open is not iterable)
                    where[key] = n
            self._opened = (handles, where, self._find_prefix(where, self._anchor))
        return self._opened

    @property
    def prefix(self) -> str:
        return self._open()[2]

    def _find_prefix(self, where: dict[str, int], anchor: str) -> str:
        matches = sorted((k[: -len(anchor)] for k in where if k.endswith(anchor)), key=len)
        # "bert.embeddings..." and not "...something_embeddings...": the prefix ends at a dot.
        matches = [m for m in matches if m == "" or m.endswith(".")]
        if not matches:
            raise ValueError(
                f"{self.source}: no tensor named {anchor!r} (with or without a prefix such as "
                f"'bert.' or 'model.'); is this checkpoint the architecture config.json says?"
            )
        return matches[0]

    def _key(self, name: str) -> str | None:
        candidates = [name]
        # Checkpoints converted from TensorFlow name LayerNorm parameters gamma/beta.
        if name.endswith("LayerNorm.weight"):
            candidates.append(name.removesuffix("weight") + "gamma")
        elif name.endswith("LayerNorm.bias"):
            candidates.append(name.removesuffix("bias") + "beta")
        _, where, prefix = self._open()
        for candidate in candidates:
            for key in (prefix + candidate, candidate):
                if key in where:
                    return key
        return None

    def has(self, name: str) -> bool:
        return self._key(name) is not None

    def get(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Tensor ``name`` as float32; checks ``shape`` when given. Errors name the tensor."""
        key = self._key(name)
        if key is None:
            raise ValueError(
                f"{self.source} lacks tensor {self.prefix + name!r}, which config.json calls for"
            )
        self.used.add(key)
        handles, where, _ = self._open()
        array = handles[where[key]].get_tensor(key)
        if shape is not None and tuple(array.shape) != tuple(shape):
            raise ValueError(
                f"{self.source}: tensor {key!r} is {tuple(array.shape)}, config.json implies "
                f"{tuple(shape)}"
            )
        return np.ascontiguousarray(array, dtype=np.float32)

    def log_unused(self) -> None:
        if self._opened is None:
            return
        unused = sorted(set(self._opened[1]) - self.used)
        if unused:
            logger.info(
                "%s: ignoring %d tensors the graph does not use: %s",
                self.source,
                len(unused),
                unused[:5],
            )
