"""The graph file a precision runs: the model's fp32 graph, or a cached int8 or fp16 copy of it."""

from __future__ import annotations

import json
from pathlib import Path

from embedserve.models.config import load_model_config
from embedserve.models.graph import fp16_onnx, onnx_for
from embedserve.precision import INT8_REFUSED_MODEL_TYPES, Precision


def graph_for(
    model_dir: Path,
    precision: Precision,
    config_dir: Path | None = None,
    *,
    pooling: str | None = None,
    compile: bool = False,
) -> Path:
    """Compile (and quantize or convert) on first use; later calls hit the cache.

    `config_dir` holds the tokenizer when the graph's folder has none: int8 calibration
    tokenizes its corpus with the model's own tokenizer. `pooling` appends that pooling to the
    float32 graph before any conversion, so the fp16 pass keeps its sums in float32.
    """
    if precision.name == "int8":
        _check_int8_supported(config_dir or model_dir)
    graph = onnx_for(model_dir, pooling=pooling, compile=compile)
    if precision.graph == "int8-static":
        from embedserve.models.static_int8 import static_int8_onnx

        configs = config_dir or model_dir
        max_length = load_model_config(configs, configs.name).max_seq_length
        graph = static_int8_onnx(graph, configs / "tokenizer.json", max_length)
    elif precision.graph == "fp16":
        graph = fp16_onnx(graph)
    return graph


def _check_int8_supported(config_dir: Path) -> None:
    config = config_dir / "config.json"
    model_type = json.loads(config.read_text()).get("model_type") if config.exists() else None
    if model_type in INT8_REFUSED_MODEL_TYPES:
        raise ValueError(
            f"precision 'int8' is not available for {model_type} models: its int8 graph stays "
            "below the int8 floor (min cosine 0.934 against fp32 on all-mpnet-base-v2, floor "
            "0.985); use fp32"
        )
