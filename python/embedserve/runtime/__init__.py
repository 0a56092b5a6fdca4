"""ONNX Runtime sessions: providers, threads, and the encoder's inputs and outputs."""

from __future__ import annotations

from embedserve.runtime.providers import cuda_device_present, resolve_providers
from embedserve.runtime.session import EncoderSession, SessionOptions

__all__ = ["EncoderSession", "SessionOptions", "cuda_device_present", "resolve_providers"]
