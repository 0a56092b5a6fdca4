"""The OpenVINO runtime as a CPU backend: same contract as EncoderSession, different kernels.

OpenVINO reads the same ONNX file (fp32, or int8 QDQ, which it turns into its own int8 kernels)
and can run fp32 graphs with bfloat16 matrix products (`INFERENCE_PRECISION_HINT`), which is
the near-exact `bf16` precision on CPUs with native bf16 (AVX512-BF16 / AMX).
"""

from __future__ import annotations

import queue
from pathlib import Path

import numpy as np

from embedserve.runtime.session import checked_inputs, graph_feeds

PROVIDER = "OpenVINO:CPU"


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def cpu_has_native_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 natively here (it lists BF16 in its capabilities)."""
    if not openvino_available():
        return False
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVINOSession:
    """Runs an encoder with OpenVINO on the CPU; returns [batch, seq, hidden] float32 states.

    Thread-safe: each call borrows an infer request from a small pool (one request is not
    reentrant), and OpenVINO releases the GIL while it infers.
    """

    pooled = False  # hidden states out; the C++ kernels pool them

    def __init__(
        self,
        path: Path,
        *,
        inference_precision: str = "f32",
        threads: int | None = None,
        requests: int = 2,
    ) -> None:
        import openvino as ov

        self.path = path
        core = ov.Core()
        model = core.read_model(str(path))
        self.input_names = checked_inputs([i.get_any_name() for i in model.inputs], path)
        config: dict[str, object] = {
            "INFERENCE_PRECISION_HINT": inference_precision,
            # Throughput hints split the cores into streams; one stream on all cores is what a
            # batch of texts wants, and what the other backend does.
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self._compiled = core.compile_model(model, "CPU", config)
        # What the plugin settled on: "bf16", or "f32" where the CPU has no bf16 (hint ignored).
        chosen = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        self.inference_precision = (
            chosen.to_string() if hasattr(chosen, "to_string") else str(chosen)
        )
        self.provider = PROVIDER
        self.output_index, self.hidden_size = _hidden_state_output(model, path)
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(max(1, requests)):
            self._requests.put(self._compiled.create_infer_request())

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray
    ) -> np.ndarray:
        feeds = graph_feeds(self.input_names, input_ids, attention_mask, token_type_ids)
        request = self._requests.get()
        try:
            request.infer(feeds)
            # Copy out: the request's output buffer is reused by its next call.
            return np.array(request.get_output_tensor(self.output_index).data, dtype=np.float32)
        finally:
            self._requests.put(request)


def _hidden_state_output(model: object, path: Path) -> tuple[int, int | None]:
    outputs = list(model.outputs)  # type: ignore[attr-defined]
    ranked = [i for i, o in enumerate(outputs) if "last_hidden_state" in o.get_names()]
    ranked += [i for i, o in enumerate(outputs) if o.get_partial_shape().rank.get_length() == 3]
    if not ranked:
        raise ValueError(f"{path}: no [batch, sequence, hidden] output")
    last = outputs[ranked[0]].get_partial_shape()[2]
    return ranked[0], (last.get_length() if last.is_static else None)
