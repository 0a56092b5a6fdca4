"""sentence-transformers' Dense module: a linear layer + activation applied to pooled vectors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedserve.models.st_modules import ModelConfigError, class_name, read_object, whole_number
from embedserve.models.torch_checkpoint import read_torch_checkpoint
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
        return read_torch_checkpoint(folder / "pytorch_model.bin")
    raise ModelConfigError(
        f"{folder} has no model.safetensors or pytorch_model.bin for its Dense module"
    )
