"""An IOBinding session for the GPU: bucketed shapes, reused (pinned) host buffers, device inputs.

Each batch is padded up to a bucket shape (sequence to a multiple of 16, rows to a power of
two up to 64 then to a multiple of 64), so ONNX Runtime sees few distinct shapes and its CUDA
memory arena reuses the same blocks run after run. Per bucket it keeps host input buffers
(page-locked with cudaHostRegister when CUDA is there, so copies to the device are DMA),
device-side input OrtValues at fixed addresses (what CUDA graphs need) and one IOBinding,
bound once. Padding rows have an all-zero mask and are cut off before returning.

The same code runs with the CPU provider (device "cpu": host buffers are the inputs, no copy),
which is how the tests exercise it on machines without a GPU.
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from embedserve.models.pooling_graph import POOLED_OUTPUT
from embedserve.runtime.providers import CUDA, resolve_providers
from embedserve.runtime.session import (
    SessionOptions,
    checked_inputs,
    graph_feeds,
    hidden_state_output,
    open_session,
)

SEQUENCE_MULTIPLE = 16
ROW_STEP = 64  # rows go by powers of two up to this, then by multiples of it
MAX_BUFFER_SETS = 64  # least recently used bucket buffers beyond this are dropped


def bucket_shape(rows: int, sequence: int, max_sequence: int | None = None) -> tuple[int, int]:
    """The padded (rows, sequence) a batch of this shape runs as."""
    if rows < 1 or sequence < 1:
        raise ValueError(f"a batch needs at least one row and one token, got {rows} x {sequence}")
    seq = -(-sequence // SEQUENCE_MULTIPLE) * SEQUENCE_MULTIPLE
    if max_sequence is not None:
        # Never past the model's position table, but never shorter than the batch itself.
        seq = max(sequence, min(seq, max_sequence))
    padded = 1 << (rows - 1).bit_length() if rows <= ROW_STEP else -(-rows // ROW_STEP) * ROW_STEP
    return padded, seq


def on_gpu(providers: str | Sequence[str] | None) -> bool:
    """Whether these providers put the model on CUDA first (auto: when a device is present);
    named ones are taken as asked, device or not (planning: `loading.plan_load` checks it)."""
    return resolve_providers(providers, here=False)[0] == CUDA


class _CudaRuntime:
    """cudaHostRegister/Unregister through the CUDA runtime ONNX Runtime itself loaded."""

    def __init__(self) -> None:
        self.lib = None
        for name in ("libcudart.so.13", "libcudart.so.12", "libcudart.so"):
            try:
                self.lib = ctypes.CDLL(name)
                break
            except OSError:
                continue

    def pin(self, array: np.ndarray) -> bool:
        if self.lib is None:
            return False
        ok = (
            self.lib.cudaHostRegister(
                ctypes.c_void_p(array.ctypes.data), ctypes.c_size_t(array.nbytes), 0
            )
            == 0
        )
        if ok:
            weakref.finalize(array, self.lib.cudaHostUnregister, ctypes.c_void_p(array.ctypes.data))
        return ok


@dataclass
class _Buffers:
    """One bucket's host arrays, device values and the IOBinding that ties them to the session."""

    host: dict[str, np.ndarray]
    device: dict[str, ort.OrtValue]
    output: np.ndarray | None
    binding: ort.IOBinding


class BoundEncoderSession:
    """`EncoderSession`'s interface (`run(ids, mask, types)`), through IOBinding and buckets.

    With a pooled graph (output `embeddings`, see models/pooling_graph.py) `run` returns
    float32 [n, d] and `pooled` is True; otherwise the [n, seq, hidden] states.
    Safe to call from several threads: each run takes its own bucket buffers.
    """

    def __init__(
        self, path: Path, options: SessionOptions | None = None, *, max_sequence: int | None = None
    ) -> None:
        self.path = path
        self._session = open_session(path, options or SessionOptions())
        self.provider = self._session.get_providers()[0]
        self.device = "cuda" if self.provider == CUDA else "cpu"
        self.max_sequence = max_sequence
        self.input_names = checked_inputs([i.name for i in self._session.get_inputs()], path)
        outputs = {o.name: o for o in self._session.get_outputs()}
        self.pooled = POOLED_OUTPUT in outputs and len(outputs[POOLED_OUTPUT].shape) == 2
        if self.pooled:
            self.output_name = POOLED_OUTPUT
            width = outputs[POOLED_OUTPUT].shape[1]
            self.hidden_size = width if isinstance(width, int) else None
        else:
            self.output_name, self.hidden_size = hidden_state_output(self._session, path)
        self._cuda = _CudaRuntime() if self.device == "cuda" else None
        self.pinned = False
        self._free: OrderedDict[tuple[int, int], list[_Buffers]] = OrderedDict()
        self._lock = threading.Lock()

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray
    ) -> np.ndarray:
        rows, seq = input_ids.shape
        shape = bucket_shape(rows, seq, self.max_sequence)
        buffers = self._take(shape)
        try:
            feeds = graph_feeds(self.input_names, input_ids, attention_mask, token_type_ids)
            for name, values in feeds.items():
                host = buffers.host[name]
                host.fill(0)  # padding: rows and columns past the batch have mask 0
                host[:rows, :seq] = values
                if self.device != "cpu":
                    buffers.device[name].update_inplace(host)
            self._session.run_with_iobinding(buffers.binding)
            if buffers.output is not None and self.device == "cpu":
                return buffers.output[:rows].copy()
            result = buffers.binding.get_outputs()[0].numpy()
            return result[:rows] if self.pooled else result[:rows, :seq]
        finally:
            self._give_back(shape, buffers)

    def _take(self, shape: tuple[int, int]) -> _Buffers:
        with self._lock:
            free = self._free.get(shape)
            if free:
                self._free.move_to_end(shape)
                return free.pop()
        return self._allocate(shape)

    def _give_back(self, shape: tuple[int, int], buffers: _Buffers) -> None:
        with self._lock:
            self._free.setdefault(shape, []).append(buffers)
            self._free.move_to_end(shape)
            while len(self._free) > MAX_BUFFER_SETS:
                self._free.popitem(last=False)

    def _allocate(self, shape: tuple[int, int]) -> _Buffers:
        binding = self._session.io_binding()
        host, device = {}, {}
        for name in self.input_names:
            host[name] = np.zeros(shape, dtype=np.int64)
            if self.device == "cpu":
                # The host array is the input: ONNX Runtime reads it where it lies.
                device[name] = ort.OrtValue.ortvalue_from_numpy(host[name])
            else:
                if self._cuda is not None:
                    self.pinned = self._cuda.pin(host[name]) or self.pinned
                device[name] = ort.OrtValue.ortvalue_from_shape_and_type(
                    shape, np.int64, self.device, 0
                )
            binding.bind_ortvalue_input(name, device[name])
        output = None
        if self.pooled and self.hidden_size is not None:
            output = np.zeros((shape[0], self.hidden_size), dtype=np.float32)
            if self.device == "cpu":
                binding.bind_ortvalue_output(
                    self.output_name, ort.OrtValue.ortvalue_from_numpy(output)
                )
            else:
                value = ort.OrtValue.ortvalue_from_shape_and_type(
                    output.shape, np.float32, self.device, 0
                )
                device[self.output_name] = value
                binding.bind_ortvalue_output(self.output_name, value)
        else:
            # Hidden states can be large: let ONNX Runtime's arena hold them, on the device.
            binding.bind_output(self.output_name, self.device)
        return _Buffers(host, device, output, binding)
