"""torch.save checkpoints (pytorch_model.bin, a Dense head's or BGE-M3's colbert_linear.pt), zip or
the older pickle stream, read without torch and without running what the pickle names."""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedserve.models.st_modules import ModelConfigError

# torch's zip checkpoints without torch: pickled tensors whose storages live in data/<key>.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "DoubleStorage": np.float64,
    "BFloat16Storage": "bfloat16",
    # Older transformers checkpoints keep a position_ids buffer.
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}


class _StateDict(dict):
    """A plain dict that takes the `_metadata` attribute `torch.save(module.state_dict())`
    pickles on its OrderedDict (BGE-M3's colbert_linear.pt)."""


# The legacy (pre-1.6) stream: these two pickles first, then sys info, the object, the storage
# keys, and each storage's raw bytes after an int64 element count (torch/serialization.py).
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: np.dtype


@dataclass(frozen=True)
class _Tensor:
    """A tensor as the pickle describes it, made once its storage's bytes are read."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def array(self, data: bytes) -> np.ndarray:
        flat = np.frombuffer(data, dtype=self.storage.dtype)
        itemsize = flat.itemsize
        return np.lib.stride_tricks.as_strided(
            flat[self.offset :], shape=self.size, strides=[s * itemsize for s in self.stride]
        ).copy()


def read_torch_checkpoint(path: Path) -> dict[str, np.ndarray]:
    """Plain tensors of a `torch.save` file, read without torch: the zip format (torch 1.6 on)
    or the older pickle stream (what 2019-2020 hub repos hold).

    Only storages and `_rebuild_tensor_v2` are allowed: anything else in the pickle is refused,
    so a hostile file cannot run code.
    """
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    return _read_legacy(path)


def _read_zip(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickle_name = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pickle_name is None:
            raise ModelConfigError(f"{path} is not a torch zip checkpoint (no data.pkl)")
        prefix = pickle_name[: -len("data.pkl")]
        with archive.open(pickle_name) as f:
            state = _Unpickler(f, path).load()
        tensors = _tensors(path, state)
        return {
            name: t.array(archive.read(f"{prefix}data/{t.storage.key}"))
            for name, t in tensors.items()
        }


def _read_legacy(path: Path) -> dict[str, np.ndarray]:
    with path.open("rb") as f:
        try:
            magic = _Unpickler(f, path).load()
            protocol = _Unpickler(f, path).load()
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            magic, protocol = exc, None
        if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL:
            raise ModelConfigError(
                f"{path} is not a torch.save checkpoint (neither a zip nor the older pickle "
                "stream): truncated or corrupt?"
            )
        _Unpickler(f, path).load()  # sys info: byte order, type sizes
        tensors = _tensors(path, _Unpickler(f, path).load())
        data: dict[str, bytes] = {}
        dtypes = {t.storage.key: t.storage.dtype for t in tensors.values()}
        for key in _Unpickler(f, path).load():
            count = int.from_bytes(f.read(8), "little", signed=True)
            dtype = dtypes.get(str(key), np.dtype(np.uint8))
            data[str(key)] = f.read(count * dtype.itemsize)
    missing = {t.storage.key for t in tensors.values()} - set(data)
    if missing:
        raise ModelConfigError(f"{path}: storages {sorted(missing)} are not in the file")
    return {name: t.array(data[t.storage.key]) for name, t in tensors.items()}


def _tensors(path: Path, state: object) -> dict[str, _Tensor]:
    if not isinstance(state, dict) or not all(isinstance(v, _Tensor) for v in state.values()):
        raise ModelConfigError(f"{path} holds no plain mapping of names to tensors")
    return {str(k): v for k, v in state.items()}


def _numpy_dtype(path: Path, name: str) -> np.dtype:
    if name not in _STORAGE_DTYPES:
        raise ModelConfigError(f"{path}: storage type {name} is not supported")
    dtype = _STORAGE_DTYPES[name]
    if dtype == "bfloat16":
        import ml_dtypes

        dtype = ml_dtypes.bfloat16
    return np.dtype(dtype).newbyteorder("<")


def _rebuild(
    storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: object
) -> _Tensor:
    return _Tensor(storage, offset, tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    """Storages, `_rebuild_tensor_v2` and the state dict's OrderedDict, nothing else."""

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> object:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        if module == "collections" and name == "OrderedDict":
            return _StateDict
        raise ModelConfigError(
            f"{self.path}: pickle refers to {module}.{name}, which is not allowed"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        # zip: ("storage", type, key, location, numel); legacy: the same and view metadata.
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] not in ("storage", b"storage"):
            raise ModelConfigError(f"{self.path}: persistent id {pid!r} is not a storage")
        if len(pid) > 5 and pid[5] is not None:
            raise ModelConfigError(f"{self.path}: storage views are not supported")
        return _Storage(str(pid[2]), _numpy_dtype(self.path, str(pid[1])))
