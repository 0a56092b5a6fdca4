"""The graph file a precision runs: the model's fp32 graph, or a cached quantized copy of it."""

from __future__ import annotations

from pathlib import Path

from embedserve.models.config import load_model_config
from embedserve.models.graph import onnx_for
from embedserve.precision import Precision


def graph_for(model_dir: Path, precision: Precision, config_dir: Path | None = None) -> Path:
    """Compile (and quantize, for int8) on first use; later calls hit the cache.

    `config_dir` holds the tokenizer when the graph's folder has none: int8 calibration
    tokenizes its corpus with the model's own tokenizer.
    """
    graph = onnx_for(model_dir)
    if precision.graph == "int8-static":
        from embedserve.models.static_int8 import static_int8_onnx

        configs = config_dir or model_dir
        max_length = load_model_config(configs, configs.name).max_seq_length
        graph = static_int8_onnx(graph, configs / "tokenizer.json", max_length)
    return graph
