"""Resolve a model spec to files on disk, read its configs, and find or compile its ONNX graph."""

from __future__ import annotations

from embedserve.models.catalog import CATALOG, DEFAULT_MODEL, CatalogEntry, find_entry
from embedserve.models.config import ModelConfig, ModelConfigError, load_model_config
from embedserve.models.graph import NoWeightsError, onnx_for
from embedserve.models.pull import PullError, pull
from embedserve.models.resolve import ModelNotFoundError, resolve_model_dir

__all__ = [
    "CATALOG",
    "DEFAULT_MODEL",
    "CatalogEntry",
    "ModelConfig",
    "ModelConfigError",
    "ModelNotFoundError",
    "NoWeightsError",
    "PullError",
    "find_entry",
    "load_model_config",
    "onnx_for",
    "pull",
    "resolve_model_dir",
]
