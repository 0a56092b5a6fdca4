"""torch.save zip checkpoints (pytorch_model.bin, a Dense head's or BGE-M3's colbert_linear.pt)
read without torch, and without running what the pickle names."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

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


def read_torch_zip(path: Path) -> dict[str, np.ndarray]:
    """Plain tensors of a `torch.save` zip file (the format since torch 1.6), read without torch.

    Only storages and `_rebuild_tensor_v2` are allowed: anything else in the pickle is refused,
    so a hostile file cannot run code.
    """
    if not zipfile.is_zipfile(path):
        # torch.save before 1.6 wrote a bare pickle stream; old hub repos still ship some.
        raise ModelConfigError(
            f"{path} is in the older torch.save format (a pickle stream, not a zip), which "
            "embedserve does not read; load it with torch and save it as model.safetensors"
        )
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickle_name = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pickle_name is None:
            raise ModelConfigError(f"{path} is not a torch zip checkpoint (no data.pkl)")
        prefix = pickle_name[: -len("data.pkl")]

        def storage(dtype_name: str, key: str) -> np.ndarray:
            if dtype_name not in _STORAGE_DTYPES:
                raise ModelConfigError(f"{path}: storage type {dtype_name} is not supported")
            dtype = _STORAGE_DTYPES[dtype_name]
            if dtype == "bfloat16":
                import ml_dtypes

                dtype = ml_dtypes.bfloat16
            return np.frombuffer(
                archive.read(f"{prefix}data/{key}"), dtype=np.dtype(dtype).newbyteorder("<")
            )

        def rebuild(
            storage_array: np.ndarray,
            offset: int,
            size: tuple[int, ...],
            stride: tuple[int, ...],
            *_: object,
        ) -> np.ndarray:
            itemsize = storage_array.itemsize
            return np.lib.stride_tricks.as_strided(
                storage_array[offset:], shape=size, strides=[s * itemsize for s in stride]
            ).copy()

        class _Unpickler(pickle.Unpickler):
            def find_class(self, module: str, name: str) -> object:
                if module == "torch._utils" and name == "_rebuild_tensor_v2":
                    return rebuild
                if module == "torch" and name in _STORAGE_DTYPES:
                    return name
                if module == "collections" and name == "OrderedDict":
                    return _StateDict
                raise ModelConfigError(
                    f"{path}: pickle refers to {module}.{name}, which is not allowed"
                )

            def persistent_load(self, pid: tuple) -> np.ndarray:
                _, dtype_name, key, *_ = pid
                return storage(dtype_name, str(key))

        with archive.open(pickle_name) as f:
            state = _Unpickler(f).load()
    return {str(k): np.asarray(v) for k, v in dict(state).items()}
