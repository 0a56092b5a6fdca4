"""The graph file a precision runs: the model's fp32 graph, or a cached int8 or fp16 copy of it."""

from __future__ import annotations

from pathlib import Path

from embedserve.models.graph import fp16_onnx, onnx_for
from embedserve.models.st_modules import static_embedding_dir
from embedserve.models.static_int8 import static_int8_onnx
from embedserve.precision import Precision


def graph_for(
    model_dir: Path,
    precision: Precision,
    config_dir: Path | None = None,
    *,
    pooling: str | None = None,
    compile: bool = False,
    max_length: int | None = None,
    tokenizer_mode: str | None = None,
) -> Path:
    """Compile (and quantize or convert) on first use; later calls hit the cache.

    `config_dir` holds the tokenizer when the graph's folder has none: int8 calibration
    tokenizes its corpus with the model's own tokenizer, cut at `max_length`, which int8 needs
    and only the caller knows (an embedder's `max_seq_length`, a ColBERT's `document_length`:
    each kind reads its own config), read in the plan's `tokenizer_mode`, as the served model
    reads it (the modes' ids can differ; int8's ranges should be those of the ids it will see).
    `pooling` appends that pooling to the float32 graph before any conversion, so the fp16 pass
    keeps its sums in float32.
    """
    graph = onnx_for(model_dir, pooling=pooling, compile=compile)
    if precision.graph == "int8-static":
        configs = config_dir or model_dir
        if static_embedding_dir(configs) is not None:
            # The graph is one Gather: no matmul for int8 to speed up, only rows to blur.
            raise ValueError(
                f"{model_dir}: a StaticEmbedding model has no int8 precision (its graph only "
                "gathers token rows); use fp32, or fp16 on a GPU"
            )
        if max_length is None:
            raise TypeError(f"{model_dir}: int8 calibrates at the model's max_length: pass it")
        if tokenizer_mode is None:
            raise TypeError(f"{model_dir}: int8 calibrates with the plan's tokenizer_mode: pass it")
        graph = static_int8_onnx(graph, configs / "tokenizer.json", max_length, tokenizer_mode)
    elif precision.graph == "fp16":
        graph = fp16_onnx(graph)
    return graph
