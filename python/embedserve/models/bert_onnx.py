"""Compile a Hugging Face BERT encoder (config.json + model.safetensors) into an ONNX graph.

The graph computes transformers' ``BertModel(...).last_hidden_state`` in eval mode, built
from standard ai.onnx opset-17 ops only, so no PyTorch is needed to export it.

Its node layout deliberately copies what ``torch.onnx.export`` produces for BertModel
(three Q/K/V MatMuls, ``Div`` by sqrt(head_dim), the ``Unsqueeze/Cast/Sub/Mul`` mask,
the ``Div/Erf/Add/Mul/Mul`` GELU, position ids sliced from a ``[1, max_pos]`` constant).
ONNX Runtime's graph fusions, both those it runs when a session is created and
``onnxruntime.transformers.optimizer`` with ``model_type="bert"``, recognise exactly those
patterns and replace them with fused kernels (Attention, SkipLayerNormalization, Gelu,
EmbedLayerNormalization). Those fused kernels beat any hand-fused layout expressible
in standard ops, so the graph stays in the shape the fusers expect.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

logger = logging.getLogger(__name__)

OPSET = 17  # the first opset with LayerNormalization
# IR 8 is what opset 17 requires; a newer IR would shut out older onnxruntime releases.
IR_VERSION = 8

SUPPORTED_ARCHITECTURES = ("BertModel",)
SUPPORTED_MODEL_TYPES = ("bert",)
SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "relu")
SUPPORTED_POSITION_EMBEDDINGS = ("absolute",)

# A protobuf message cannot exceed 2 GiB; leave room for the graph itself.
MAX_INLINE_BYTES = 1_800_000_000

# transformers masks with torch.finfo(dtype).min, not -10000; same value, same numerics.
MASK_VALUE = float(np.finfo(np.float32).min)

# Parts of a checkpoint the encoder never reads: the pooler/MLM heads and a saved buffer.
_IGNORED_PREFIXES = ("pooler.", "cls.", "embeddings.position_ids", "embeddings.token_type_ids")


class UnsupportedArchitectureError(ValueError):
    """config.json describes a model this compiler cannot translate."""


@dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face BertConfig that shape the graph."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def compile_bert_to_onnx(model_dir: Path, output_path: Path) -> Path:
    """Compile ``model_dir``'s BERT weights into an ONNX graph at ``output_path``.

    Inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64 [batch, sequence]);
    output ``last_hidden_state`` (float32 [batch, sequence, hidden]). The sequence may be at
    most ``max_position_embeddings`` long. Returns ``output_path``.
    """
    model_dir = Path(model_dir)
    output_path = Path(output_path)
    config = read_bert_config(model_dir / "config.json")
    weights = load_bert_weights(model_dir / "model.safetensors", config)
    model = build_bert_graph(config, weights, name=model_dir.name)
    save_model_atomically(model, output_path)
    return output_path


# --- config ---------------------------------------------------------------------------


def read_bert_config(path: Path) -> BertConfig:
    """Parse config.json, refusing anything whose graph would differ from BERT's."""
    if not path.exists():
        raise FileNotFoundError(f"no config.json at {path}")
    raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    _check_architecture(raw, path)
    position_type = raw.get("position_embedding_type", "absolute")
    if position_type not in SUPPORTED_POSITION_EMBEDDINGS:
        raise UnsupportedArchitectureError(
            f"{path}: position_embedding_type {position_type!r} is not supported; "
            f"supported: {', '.join(SUPPORTED_POSITION_EMBEDDINGS)}"
        )
    hidden_act = raw.get("hidden_act", "gelu")
    if hidden_act not in SUPPORTED_ACTIVATIONS:
        raise UnsupportedArchitectureError(
            f"{path}: hidden_act {hidden_act!r} is not supported; "
            f"supported: {', '.join(SUPPORTED_ACTIVATIONS)}"
        )
    required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    missing = [key for key in required if key not in raw]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}, which a BERT config must have")
    config = BertConfig(
        hidden_size=int(raw["hidden_size"]),
        num_layers=int(raw["num_hidden_layers"]),
        num_heads=int(raw["num_attention_heads"]),
        intermediate_size=int(raw["intermediate_size"]),
        max_positions=int(raw.get("max_position_embeddings", 512)),
        type_vocab_size=int(raw.get("type_vocab_size", 2)),
        layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
        hidden_act=hidden_act,
    )
    if config.hidden_size % config.num_heads:
        raise UnsupportedArchitectureError(
            f"{path}: hidden_size {config.hidden_size} is not a multiple of "
            f"num_attention_heads {config.num_heads}"
        )
    return config


def _check_architecture(raw: dict[str, Any], path: Path) -> None:
    # model_type is authoritative when present (NomicBertModel has "nomic_bert", which a
    # substring test on the class name would wrongly accept); architectures is the fallback.
    model_type = raw.get("model_type")
    architectures = raw.get("architectures") or []
    if model_type is not None:
        accepted = model_type in SUPPORTED_MODEL_TYPES
    else:
        accepted = any(
            a in SUPPORTED_ARCHITECTURES or a.startswith("BertFor") for a in architectures
        )
    if not accepted:
        raise UnsupportedArchitectureError(
            f"{path}: architectures {architectures} (model_type {model_type!r}) cannot be "
            f"compiled; supported: architectures {list(SUPPORTED_ARCHITECTURES)} "
            f"or model_type {list(SUPPORTED_MODEL_TYPES)}"
        )


# --- weights --------------------------------------------------------------------------


def load_bert_weights(path: Path, config: BertConfig) -> dict[str, np.ndarray]:
    """Read the encoder's tensors as float32, keyed by their names without a "bert." prefix."""
    if not path.exists():
        raise FileNotFoundError(f"no weights at {path} (a single model.safetensors is required)")
    # Registers numpy's "bfloat16" dtype so safetensors can hand back bf16 checkpoints.
    import ml_dtypes  # noqa: F401
    from safetensors.numpy import load_file

    weights: dict[str, np.ndarray] = {}
    for key, tensor in load_file(str(path)).items():
        name = _canonical_name(key)
        if name.startswith(_IGNORED_PREFIXES):
            continue
        weights[name] = np.ascontiguousarray(tensor, dtype=np.float32)
    _check_weights(weights, config, path)
    return weights


def _canonical_name(key: str) -> str:
    # BertFor* checkpoints nest the encoder under "bert."; old TF conversions say gamma/beta.
    name = key.removeprefix("bert.")
    if name.endswith("LayerNorm.gamma"):
        name = name.removesuffix("gamma") + "weight"
    elif name.endswith("LayerNorm.beta"):
        name = name.removesuffix("beta") + "bias"
    return name


def _expected_shapes(config: BertConfig) -> dict[str, tuple[int, ...]]:
    h, i = config.hidden_size, config.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.position_embeddings.weight": (config.max_positions, h),
        "embeddings.token_type_embeddings.weight": (config.type_vocab_size, h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
    }
    for n in range(config.num_layers):
        p = f"encoder.layer.{n}."
        for part in ("query", "key", "value"):
            shapes[f"{p}attention.self.{part}.weight"] = (h, h)
            shapes[f"{p}attention.self.{part}.bias"] = (h,)
        shapes[f"{p}attention.output.dense.weight"] = (h, h)
        shapes[f"{p}intermediate.dense.weight"] = (i, h)
        shapes[f"{p}intermediate.dense.bias"] = (i,)
        shapes[f"{p}output.dense.weight"] = (h, i)
        for norm in ("attention.output", "output"):
            shapes[f"{p}{norm}.LayerNorm.weight"] = (h,)
            shapes[f"{p}{norm}.LayerNorm.bias"] = (h,)
        shapes[f"{p}attention.output.dense.bias"] = (h,)
        shapes[f"{p}output.dense.bias"] = (h,)
    return shapes


def _check_weights(weights: dict[str, np.ndarray], config: BertConfig, path: Path) -> None:
    expected = _expected_shapes(config)
    missing = sorted(set(expected) - set(weights))
    if "embeddings.word_embeddings.weight" not in weights:
        missing.insert(0, "embeddings.word_embeddings.weight")
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise ValueError(f"{path} lacks tensors config.json calls for: {shown}")
    wrong = [
        f"{name} is {weights[name].shape}, config.json implies {shape}"
        for name, shape in expected.items()
        if weights[name].shape != shape
    ]
    word = weights["embeddings.word_embeddings.weight"]
    if word.ndim != 2 or word.shape[1] != config.hidden_size:
        wrong.append(
            f"embeddings.word_embeddings.weight is {word.shape}, wanted (vocab, {config.hidden_size})"
        )
    if wrong:
        raise ValueError(f"{path} does not match its config.json: " + "; ".join(wrong[:5]))
    unused = sorted(set(weights) - set(expected) - {"embeddings.word_embeddings.weight"})
    if unused:
        logger.info(
            "%s: ignoring %d tensors the encoder does not use: %s", path, len(unused), unused[:5]
        )


# --- graph ----------------------------------------------------------------------------


class _GraphBuilder:
    """Accumulates nodes and initializers; hands out unique names for intermediate values."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._constants: dict[tuple[str, bytes], str] = {}

    def weight(self, name: str, array: np.ndarray) -> str:
        # np.asarray, not np.ascontiguousarray: the latter turns 0-d scalars into shape (1,).
        self.initializers.append(numpy_helper.from_array(np.asarray(array, order="C"), name))
        return name

    def const(self, value: Any, dtype: type = np.float32) -> str:
        """A small constant initializer, shared by every node that needs the same value."""
        array = np.asarray(value, dtype=dtype)
        key = (str(array.dtype) + str(array.shape), array.tobytes())
        if key not in self._constants:
            self._constants[key] = self.weight(f"const_{len(self._constants)}", array)
        return self._constants[key]

    def op(
        self, op_type: str, inputs: list[str], name: str, output: str | None = None, **attrs: Any
    ) -> str:
        out = output or name
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out


def build_bert_graph(
    config: BertConfig, weights: dict[str, np.ndarray], name: str = "bert"
) -> onnx.ModelProto:
    """The ONNX model for ``config`` with ``weights`` (canonical names, float32) baked in."""
    g = _GraphBuilder()
    hidden = _embeddings(g, config, weights)
    mask = _extended_mask(g)
    for n in range(config.num_layers):
        last = n == config.num_layers - 1
        hidden = _layer(
            g, config, weights, n, hidden, mask, output="last_hidden_state" if last else None
        )
    if config.num_layers == 0:
        g.op("Identity", [hidden], "output", output="last_hidden_state")

    dims = ["batch", "sequence"]
    inputs = [
        helper.make_tensor_value_info(i, TensorProto.INT64, dims)
        for i in ("input_ids", "attention_mask", "token_type_ids")
    ]
    outputs = [
        helper.make_tensor_value_info(
            "last_hidden_state", TensorProto.FLOAT, [*dims, config.hidden_size]
        )
    ]
    graph = helper.make_graph(g.nodes, name, inputs, outputs, g.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="embedserve",
        doc_string="BertModel last_hidden_state, compiled from safetensors by embedserve",
    )
    model.ir_version = IR_VERSION
    return model


def _embeddings(g: _GraphBuilder, config: BertConfig, w: dict[str, np.ndarray]) -> str:
    word = g.weight("embeddings.word_embeddings.weight", w["embeddings.word_embeddings.weight"])
    types = g.weight(
        "embeddings.token_type_embeddings.weight", w["embeddings.token_type_embeddings.weight"]
    )
    positions = g.weight(
        "embeddings.position_embeddings.weight", w["embeddings.position_embeddings.weight"]
    )
    # Positions 0..seq-1 come from slicing a [1, max_pos] constant by input_ids' length:
    # the exact shape EmbedLayerNormalization fusion looks for.
    position_ids = g.weight(
        "embeddings.position_ids", np.arange(config.max_positions, dtype=np.int64)[None, :]
    )
    shape = g.op("Shape", ["input_ids"], "embeddings/shape")
    seq_len = g.op("Gather", [shape, g.const(1, np.int64)], "embeddings/seq_len", axis=0)
    seq_end = g.op("Unsqueeze", [seq_len, g.const([0], np.int64)], "embeddings/seq_end")
    sliced = g.op(
        "Slice",
        [
            position_ids,
            g.const([0], np.int64),
            seq_end,
            g.const([1], np.int64),
            g.const([1], np.int64),
        ],
        "embeddings/position_ids",
    )
    word_vec = g.op("Gather", [word, "input_ids"], "embeddings/word")
    type_vec = g.op("Gather", [types, "token_type_ids"], "embeddings/token_type")
    pos_vec = g.op("Gather", [positions, sliced], "embeddings/position")
    summed = g.op("Add", [word_vec, type_vec], "embeddings/add_token_type")
    summed = g.op("Add", [summed, pos_vec], "embeddings/add_position")
    return _layer_norm(g, config, w, "embeddings.LayerNorm", summed, "embeddings/layer_norm")


def _extended_mask(g: _GraphBuilder) -> str:
    """(1 - mask) * finfo.min as [batch, 1, 1, sequence], built once and added in every layer."""
    unsqueezed = g.op(
        "Unsqueeze", ["attention_mask", g.const([1], np.int64)], "mask/unsqueeze_heads"
    )
    unsqueezed = g.op("Unsqueeze", [unsqueezed, g.const([2], np.int64)], "mask/unsqueeze_queries")
    as_float = g.op("Cast", [unsqueezed], "mask/cast", to=TensorProto.FLOAT)
    inverted = g.op("Sub", [g.const(1.0), as_float], "mask/invert")
    return g.op("Mul", [inverted, g.const(MASK_VALUE)], "mask/scale")


def _layer(
    g: _GraphBuilder,
    config: BertConfig,
    w: dict[str, np.ndarray],
    n: int,
    x: str,
    mask: str,
    output: str | None,
) -> str:
    p = f"encoder.layer.{n}."
    scope = f"layer{n}"
    attended = _self_attention(g, config, w, p + "attention.self.", scope, x, mask)
    projected = _dense(g, w, p + "attention.output.dense", attended, f"{scope}/attention_output")
    residual = g.op("Add", [projected, x], f"{scope}/attention_residual")
    x = _layer_norm(
        g, config, w, p + "attention.output.LayerNorm", residual, f"{scope}/attention_norm"
    )

    inner = _dense(g, w, p + "intermediate.dense", x, f"{scope}/intermediate")
    inner = _activation(g, config.hidden_act, inner, f"{scope}/{config.hidden_act}")
    projected = _dense(g, w, p + "output.dense", inner, f"{scope}/output")
    residual = g.op("Add", [projected, x], f"{scope}/output_residual")
    return _layer_norm(
        g, config, w, p + "output.LayerNorm", residual, f"{scope}/output_norm", output=output
    )


def _self_attention(
    g: _GraphBuilder,
    config: BertConfig,
    w: dict[str, np.ndarray],
    prefix: str,
    scope: str,
    x: str,
    mask: str,
) -> str:
    heads_shape = g.const([0, 0, config.num_heads, config.head_dim], np.int64)
    # Three separate projections rather than one [h, 3h] MatMul: ORT's Attention fusion
    # only recognises this form, and packs Q/K/V into one GEMM itself.
    projected = {}
    for part in ("query", "key", "value"):
        dense = _dense(g, w, prefix + part, x, f"{scope}/{part}")
        projected[part] = g.op("Reshape", [dense, heads_shape], f"{scope}/{part}_heads")
    q = g.op("Transpose", [projected["query"]], f"{scope}/query_t", perm=[0, 2, 1, 3])
    k = g.op("Transpose", [projected["key"]], f"{scope}/key_t", perm=[0, 2, 3, 1])
    v = g.op("Transpose", [projected["value"]], f"{scope}/value_t", perm=[0, 2, 1, 3])

    scores = g.op("MatMul", [q, k], f"{scope}/scores")
    scores = g.op("Div", [scores, g.const(math.sqrt(config.head_dim))], f"{scope}/scaled_scores")
    scores = g.op("Add", [scores, mask], f"{scope}/masked_scores")
    probs = g.op("Softmax", [scores], f"{scope}/probs", axis=-1)
    context = g.op("MatMul", [probs, v], f"{scope}/context")
    context = g.op("Transpose", [context], f"{scope}/context_t", perm=[0, 2, 1, 3])
    return g.op(
        "Reshape",
        [context, g.const([0, 0, config.hidden_size], np.int64)],
        f"{scope}/context_merged",
    )


def _dense(g: _GraphBuilder, w: dict[str, np.ndarray], prefix: str, x: str, scope: str) -> str:
    # torch Linear stores [out, in]; transposing once here makes each dense a plain MatMul.
    weight = g.weight(prefix + ".weight_t", w[prefix + ".weight"].T)
    bias = g.weight(prefix + ".bias", w[prefix + ".bias"])
    product = g.op("MatMul", [x, weight], scope + "_matmul")
    return g.op("Add", [product, bias], scope + "_bias")


def _layer_norm(
    g: _GraphBuilder,
    config: BertConfig,
    w: dict[str, np.ndarray],
    prefix: str,
    x: str,
    scope: str,
    output: str | None = None,
) -> str:
    scale = g.weight(prefix + ".weight", w[prefix + ".weight"])
    bias = g.weight(prefix + ".bias", w[prefix + ".bias"])
    return g.op(
        "LayerNormalization",
        [x, scale, bias],
        scope,
        output=output,
        axis=-1,
        epsilon=config.layer_norm_eps,
    )


def _activation(g: _GraphBuilder, kind: str, x: str, scope: str) -> str:
    if kind == "relu":
        return g.op("Relu", [x], scope)
    if kind == "gelu":
        # Exact GELU 0.5 * x * (1 + erf(x / sqrt(2))), in the node order torch exports.
        scaled = g.op("Div", [x, g.const(math.sqrt(2.0))], scope + "/div")
        erf = g.op("Erf", [scaled], scope + "/erf")
        shifted = g.op("Add", [erf, g.const(1.0)], scope + "/add")
        product = g.op("Mul", [x, shifted], scope + "/mul")
        return g.op("Mul", [product, g.const(0.5)], scope + "/half")
    # gelu_new: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))), as transformers' NewGELU.
    cubed = g.op("Pow", [x, g.const(3.0)], scope + "/pow")
    cubed = g.op("Mul", [cubed, g.const(0.044715)], scope + "/cubic_coeff")
    inner = g.op("Add", [x, cubed], scope + "/inner")
    inner = g.op("Mul", [inner, g.const(math.sqrt(2.0 / math.pi))], scope + "/inner_scale")
    tanh = g.op("Tanh", [inner], scope + "/tanh")
    shifted = g.op("Add", [tanh, g.const(1.0)], scope + "/add")
    half_x = g.op("Mul", [x, g.const(0.5)], scope + "/half")
    return g.op("Mul", [half_x, shifted], scope + "/mul")


# --- writing --------------------------------------------------------------------------


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
    # Not mkstemp: its 0600 mode would survive the rename and hide a shared cache from
    # other users. A unique name opened exclusively gets the umask's usual permissions.
    tmp = output_path.with_name(f"{output_path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("xb") as f:
            f.write(model.SerializeToString())
        os.replace(tmp, output_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_with_external_data(model: onnx.ModelProto, output_path: Path) -> None:
    # Both files are written in a scratch folder beside the target, then moved data first,
    # so a graph that is visible always finds its own data next to it.
    data_name = output_path.name + ".data"
    scratch = Path(tempfile.mkdtemp(dir=output_path.parent, prefix=output_path.name + "."))
    try:
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
        os.replace(scratch / data_name, output_path.parent / data_name)
        os.replace(staged, output_path)
    finally:
        for leftover in scratch.iterdir():
            leftover.unlink()
        scratch.rmdir()
