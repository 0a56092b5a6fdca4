"""Compile a Hugging Face checkpoint (config.json + safetensors) into an ONNX graph.

The graph computes transformers' ``<Family>Model(...).last_hidden_state`` in eval mode from
standard ai.onnx opset-17 ops, so no PyTorch is needed. Families live in ``architectures``,
the pieces they are made of in ``layers``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from embedserve.fileio import atomic_write_bytes, publish_file, staging_dir
from embedserve.models.architectures import Encoded, family_for, static_embedding
from embedserve.models.hf_config import HFConfig, UnsupportedArchitectureError
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.weights import Weights

OPSET = 17  # the first opset with LayerNormalization
# IR 8 is what opset 17 requires; a newer IR would shut out older onnxruntime releases.
IR_VERSION = 8

# A protobuf message cannot exceed 2 GiB; leave room for the graph itself.
MAX_INLINE_BYTES = 1_800_000_000

__all__ = [
    "Head",
    "Output",
    "UnsupportedArchitectureError",
    "build_model",
    "build_static_embedding",
    "check_supported",
    "compile_to_onnx",
    "save_model_atomically",
]


@dataclass(frozen=True)
class Output:
    """A graph output: its value name, dims (ints, or names of dynamic dims) and element type."""

    name: str
    dims: tuple[int | str, ...]
    dtype: int = TensorProto.FLOAT


# A head's result: one output, or several (a sparse head's indices and values).
Head = Callable[[GraphBuilder, HFConfig, Weights, Encoded], Output | tuple[Output, ...]]


def check_supported(model_dir: Path) -> HFConfig:
    """Read ``model_dir``/config.json and fail early if no family compiles it."""
    config = HFConfig.read(Path(model_dir) / "config.json")
    family_for(config)
    return config


def build_model(model_dir: Path, head: Head | None = None) -> onnx.ModelProto:
    """The ONNX model for ``model_dir``: last_hidden_state, or ``head``'s output if given."""
    model_dir = Path(model_dir)
    config = HFConfig.read(model_dir / "config.json")
    family = family_for(config)
    weights = Weights(model_dir, family.anchor)
    g = GraphBuilder()
    encoded = family.build(g, config, weights)
    if head is None:
        outputs: Output | tuple[Output, ...] = Output(
            encoded.hidden, ("batch", "sequence", encoded.hidden_size)
        )
    else:
        outputs = head(g, config, weights, encoded)
    weights.log_unused()
    values = [
        helper.make_tensor_value_info(o.name, o.dtype, list(o.dims))
        for o in (outputs if isinstance(outputs, tuple) else (outputs,))
    ]
    return g.model(
        values,
        name=model_dir.name or family.name,
        doc=f"{family.name} compiled from safetensors by embedserve "
        f"(checkpoint dtype {config.dtype or 'unstated'}, computed in float32)",
        opset=OPSET,
        ir_version=IR_VERSION,
    )


def build_static_embedding(module_dir: Path) -> onnx.ModelProto:
    """The ONNX model for a StaticEmbedding module's folder: its gathered token rows."""
    weights = Weights(Path(module_dir), static_embedding.TABLE)
    g = GraphBuilder()
    encoded = static_embedding.build(g, weights)
    weights.log_unused()
    dims = ["batch", "sequence", encoded.hidden_size]
    value = helper.make_tensor_value_info(encoded.hidden, TensorProto.FLOAT, dims)
    return g.model(
        [value],
        name=static_embedding.NAME,
        doc="StaticEmbedding compiled from safetensors by embedserve",
        opset=OPSET,
        ir_version=IR_VERSION,
    )


def compile_to_onnx(model_dir: Path, output_path: Path, head: Head | None = None) -> Path:
    """Compile ``model_dir`` into an ONNX graph at ``output_path``; returns ``output_path``.

    Inputs: int64 [batch, sequence] ``input_ids`` and ``attention_mask``, plus
    ``token_type_ids`` for models with several token types. Output: float32
    ``last_hidden_state`` [batch, sequence, hidden] (or the head's output).
    """
    output_path = Path(output_path)
    model = build_model(Path(model_dir), head)
    save_model_atomically(model, output_path)
    return output_path


def save_model_atomically(model: onnx.ModelProto, output_path: Path) -> None:
    """Write ``model`` so readers see either the old file or the complete new one.

    Models past protobuf's 2 GiB limit keep their weights in ``<name>.data`` beside the graph.
    """
    output_path.parent.mkdir(parents=True, exist_ok=True)
    size = sum(len(t.raw_data) for t in model.graph.initializer)
    if size < MAX_INLINE_BYTES:
        onnx.checker.check_model(model)
        _write_single_file(model, output_path)
    else:
        _write_with_external_data(model, output_path)


def _write_single_file(model: onnx.ModelProto, output_path: Path) -> None:
    atomic_write_bytes(output_path, model.SerializeToString())


def _write_with_external_data(model: onnx.ModelProto, output_path: Path) -> None:
    # Both files are written in a scratch folder beside the target, then published data first,
    # so a graph that is visible always finds its own data next to it.
    data_name = output_path.name + ".data"
    with staging_dir(output_path) as scratch:
        staged = scratch / output_path.name
        onnx.save_model(
            model,
            str(staged),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_name,
            size_threshold=1024,
        )
        onnx.checker.check_model(str(staged))
        publish_file(scratch / data_name, output_path.parent / data_name)
        publish_file(staged, output_path)
