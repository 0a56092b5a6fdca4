"""sentence-transformers' Dense module: a linear layer + activation applied to pooled vectors."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedserve.models.st_modules import ModelConfigError, class_name, read_object, whole_number
from embedserve.models.weights import load_safetensors


def _gelu(x: np.ndarray) -> np.ndarray:
    from math import erf  # exact (erf) GELU, as torch.nn.GELU() by default

    return (0.5 * x * (1.0 + np.vectorize(erf, otypes=[np.float64])(x / np.sqrt(2.0)))).astype(
        x.dtype
    )


# torch.nn activation class names -> NumPy, computed in float64 and cast back by the caller.
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Identity": lambda x: x,
    "Tanh": np.tanh,
    "ReLU": lambda x: np.maximum(x, 0.0),
    "Sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "SiLU": lambda x: x / (1.0 + np.exp(-x)),
    "GELU": _gelu,
}


@dataclass(frozen=True)
class DenseLayer:
    weight: np.ndarray  # [out_features, in_features], as torch.nn.Linear stores it
    bias: np.ndarray | None
    activation: str

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """float32 [n, out] from float32 [n, in]; double accumulation keeps it at torch's fp32 or better."""
        y = x.astype(np.float64) @ self.weight.T
        if self.bias is not None:
            y += self.bias
        return np.ascontiguousarray(ACTIVATIONS[self.activation](y), dtype=np.float32)


def load_dense(folder: Path) -> DenseLayer:
    """A Dense module folder: config.json plus model.safetensors or (older) pytorch_model.bin."""
    path = folder / "config.json"
    config = read_object(path)
    if config is None:
        # sentence-transformers cannot load it either; its Tanh default may not be the author's.
        raise ModelConfigError(f"{folder} is a Dense module without a config.json")
    activation = class_name(
        str(config.get("activation_function") or "torch.nn.modules.activation.Tanh")
    )
    if activation not in ACTIVATIONS:
        raise ModelConfigError(
            f"{folder}: Dense activation {config.get('activation_function')!r} is not supported "
            f"(supported: {', '.join(sorted(ACTIVATIONS))})"
        )
    tensors = _read_weights(folder)
    weight = tensors.get("linear.weight")
    if weight is None or weight.ndim != 2:
        raise ModelConfigError(f"{folder}: Dense weights have no 2-D linear.weight")
    bias = tensors.get("linear.bias")
    expected = tuple(
        None if config.get(key) is None else whole_number(config[key], path, key)
        for key in ("out_features", "in_features")
    )
    if None not in expected and tuple(weight.shape) != expected:
        raise ModelConfigError(f"{folder}: linear.weight is {weight.shape}, config says {expected}")
    return DenseLayer(
        weight.astype(np.float64), None if bias is None else bias.astype(np.float64), activation
    )


def _read_weights(folder: Path) -> dict[str, np.ndarray]:
    if (folder / "model.safetensors").exists():
        return load_safetensors(folder / "model.safetensors")
    if (folder / "pytorch_model.bin").exists():
        return read_torch_zip(folder / "pytorch_model.bin")
    raise ModelConfigError(
        f"{folder} has no model.safetensors or pytorch_model.bin for its Dense module"
    )


# torch's zip checkpoints without torch: pickled tensors whose storages live in data/<key>.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "DoubleStorage": np.float64,
    "BFloat16Storage": None,
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
            dtype = _STORAGE_DTYPES.get(dtype_name)
            if dtype is None:
                raise ModelConfigError(f"{path}: storage type {dtype_name} is not supported")
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
