"""Static int8 (QDQ) copies of fp32 encoder graphs, activations calibrated on a public corpus.

The calibration corpus is the prose of Python's own documentation (`pydoc_data.topics`, PSF
license), which ships with every CPython: no download, and disjoint from the reference texts
the fidelity tests and benchmarks use. Weights are int8 per output channel; activations uint8
with one scale per tensor fixed at calibration time, so a text's vector does not depend on the
batch it lands in (dynamic int8's does).

Before calibrating, outlier channels are smoothed (SmoothQuant, Xiao et al. 2022): each
LayerNorm output that feeds quantized MatMuls is divided per channel by `s` on its way to them,
and their weights' rows are multiplied by `s`. The product is unchanged, but a channel that
reaches -42 while the rest sit near +-2 (all-mpnet-base-v2) no longer stretches the one scale
of its tensor. The residual path keeps the unscaled tensor (these models are post-LayerNorm), so
the division is an explicit `Mul` on the MatMuls' branch only.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from embedserve.fileio import atomic_write_path

# Bump when the recipe below changes, so cached graphs are rebuilt.
STATIC_INT8_VERSION = 5
CALIBRATION_TEXTS = 256
CALIBRATION_BATCH = 16
# Activation ranges span this percentile of the calibration values. 100 (the extremes): BERT's
# LayerNorm outputs have a few outlier channels that carry meaning, and clipping them at 99.99
# dropped the minimum cosine to 0.58 (bench/NOTES.md §R2.3).
PERCENTILE = 100.0
# Weights in 7 bits (reduce_range). Without a VNNI/AMX unit, ORT's u8 x s8 MatMul kernel (AVX2
# vpmaddubsw) adds pairs of products in saturating int16: 2 * 255 * 127 > 32767. MPNet's
# activations are lopsided (one LayerNorm channel reaches -40 while the rest sit near +-2), so
# their uint8 zero point is ~200 and most pairs saturate: cosine < 0 against fp32. With 7-bit
# weights 2 * 255 * 63 fits; MiniLM's zero points sit near 128 and never showed the problem.
REDUCE_RANGE = True
# SmoothQuant's migration strength: s = peak|x|^alpha / peak|w|^(1 - alpha) per input channel.
# 0.5 splits the range evenly between activations and weights (the paper's default for BERT-size
# models). Min cos over the 200 reference texts, before -> after: all-MiniLM-L6-v2 0.988 -> 0.997,
# all-mpnet-base-v2 0.934 -> 0.994 (bench/NOTES.md, "Smoothing outlier channels").
SMOOTHING_ALPHA = 0.5


def calibration_texts(count: int = CALIBRATION_TEXTS) -> list[str]:
    """`count` paragraphs of Python's documentation, spread over all topics, in a fixed order."""
    from pydoc_data.topics import topics

    paragraphs = []
    for key in sorted(topics):
        for block in topics[key].split("\n\n"):
            text = re.sub(r"\s+", " ", block).strip()
            # Prose only: code samples and one-line headings calibrate nothing a user sends.
            if len(text.split()) >= 8 and not text.startswith((">>>", "...", "*")):
                paragraphs.append(text)
    paragraphs = list(dict.fromkeys(paragraphs))  # some topics share paragraphs
    step = max(1, len(paragraphs) // count)
    return paragraphs[::step][:count]


def sensitive_nodes(graph_path: Path) -> list[str]:
    """MatMuls kept in float, where int8 costs the most cosine (bench/NOTES.md §R2.3):

    - each layer's FFN down-projection (a constant [k, n] weight with k > n): its input, after
      GELU, has the widest range of any activation;
    - every MatMul of the last layer, whose error reaches the pooled vector undamped.

    Found by weight shape and by the compiler's `layer{n}/` node scopes, so it holds for every
    architecture the compiler emits.
    """
    import onnx

    model = onnx.load(str(graph_path), load_external_data=False)
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    dense = [
        n
        for n in model.graph.node
        if n.op_type == "MatMul" and len(n.input) == 2 and len(shapes.get(n.input[1], ())) == 2
    ]
    scopes = [n.name.split("/")[0] for n in dense if "/" in n.name]
    last_scope = scopes[-1] if scopes else None
    keep = []
    for node in dense:
        rows, cols = shapes[node.input[1]]
        if rows > cols or (last_scope is not None and node.name.split("/")[0] == last_scope):
            keep.append(node.name)
    return keep


def calibration_batches(
    tokenizer_json: Path, max_length: int, input_names: list[str]
) -> list[dict[str, np.ndarray]]:
    from embedserve.planning import pad_batch
    from embedserve.tokenization import ModelTokenizer

    tokenizer = ModelTokenizer(tokenizer_json, max_length)
    content = tokenizer.content_ids(calibration_texts())
    sequences = [
        tokenizer.model_sequence(i, ids, truncate=True, direction="right")
        for i, ids in enumerate(content)
    ]
    sequences.sort(key=len)
    batches = []
    for start in range(0, len(sequences), CALIBRATION_BATCH):
        ids, mask, types = pad_batch(sequences[start : start + CALIBRATION_BATCH])
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        batches.append({name: feeds[name] for name in input_names})
    return batches


def quantized_inputs(model: object, keep_float: list[str]) -> dict[str, list[str]]:
    """Activation tensors to quantize (the data input of each constant-weight MatMul) -> nodes."""
    constants = {init.name for init in model.graph.initializer}  # type: ignore[attr-defined]
    wanted: dict[str, list[str]] = {}
    for node in model.graph.node:  # type: ignore[attr-defined]
        if node.op_type == "MatMul" and node.input[1] in constants and node.name not in keep_float:
            wanted.setdefault(node.input[0], []).append(node.name)
    return wanted


def _session_with_outputs(model: object, tensors: list[str]) -> object:
    """An ORT session of a copy of `model` that also outputs the intermediate `tensors`."""
    import onnx
    import onnxruntime as ort

    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)  # type: ignore[arg-type]
    known = {o.name for o in augmented.graph.output}
    for name in tensors:
        if name not in known:
            augmented.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(
        augmented.SerializeToString(), so, providers=["CPUExecutionProvider"]
    )


def activation_ranges(
    model: object,
    tensors: list[str],
    batches: list[dict[str, np.ndarray]],
    percentile: float = PERCENTILE,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """(low, high) of each tensor over the real tokens of the calibration batches.

    Padding positions are left out (onnxruntime's own calibrators count them, and a padded row's
    states are not what any text produces), and the range is the `percentile` of the values,
    not their extremes: a handful of outliers would otherwise stretch the scale of every token.
    """
    session = _session_with_outputs(model, tensors)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[np.ndarray]] = {name: [] for name in tensors}
    for feeds in batches:
        outputs = session.run(tensors, feeds)  # type: ignore[attr-defined]
        real = feeds["attention_mask"].astype(bool)
        # A quarter of the real tokens is plenty for a percentile and keeps memory small.
        keep = real & (rng.random(real.shape) < 0.25)
        for name, value in zip(tensors, outputs):
            samples[name].append(value[keep].ravel() if value.ndim == 3 else value.ravel())
    ranges = {}
    for name, parts in samples.items():
        values = np.concatenate(parts)
        low, high = np.percentile(values, [100.0 - percentile, percentile])
        ranges[name] = (float(min(low, 0.0)), float(max(high, 0.0)))
    return ranges


def channel_peaks(
    model: object, tensors: list[str], batches: list[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Each [batch, tokens, channels] tensor's largest |value| per channel, over real tokens."""
    session = _session_with_outputs(model, tensors)
    peaks: dict[str, np.ndarray] = {}
    for feeds in batches:
        real = feeds["attention_mask"].astype(bool)
        for name, value in zip(tensors, session.run(tensors, feeds)):  # type: ignore[attr-defined]
            peak = np.abs(value[real]).max(axis=0)
            peaks[name] = np.maximum(peaks[name], peak) if name in peaks else peak
    return peaks


def smooth_outlier_channels(
    model: object,
    batches: list[dict[str, np.ndarray]],
    keep_float: list[str],
    alpha: float = SMOOTHING_ALPHA,
) -> int:
    """Move outlier channels from LayerNorm outputs into the weights of the quantized MatMuls
    that read them (module docstring), in place. Returns how many tensors were smoothed."""
    from onnx import helper, numpy_helper

    graph = model.graph  # type: ignore[attr-defined]
    weights = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    by_name = {node.name: node for node in graph.node}
    # The MatMuls that will be quantized, grouped by the activation they read: only those whose
    # activation is a LayerNorm output are smoothed.
    readers = {
        tensor: [by_name[name] for name in names]
        for tensor, names in quantized_inputs(model, keep_float).items()
        if tensor in producers and producers[tensor].op_type == "LayerNormalization"
    }
    peaks = channel_peaks(model, sorted(readers), batches)
    smoothing = {}
    for tensor, nodes in readers.items():
        arrays = [numpy_helper.to_array(weights[n.input[1]]) for n in nodes]  # type: ignore[attr-defined]
        weight_peak = np.max([np.abs(w).max(axis=1) for w in arrays], axis=0)
        scale = np.maximum(peaks[tensor], 1e-5) ** alpha / np.maximum(weight_peak, 1e-5) ** (
            1 - alpha
        )
        scale = np.clip(scale, 1e-3, 1e3).astype(np.float32)
        for node, w in zip(nodes, arrays):
            name = node.input[1]  # type: ignore[attr-defined]
            weights[name].CopyFrom(numpy_helper.from_array(w * scale[:, None], name=name))
        inverse = numpy_helper.from_array(1.0 / scale, name=f"{tensor}/smoothing")
        graph.initializer.append(inverse)
        smoothed = f"{tensor}/smoothed"
        scope = nodes[0].name.rsplit("/", 1)[0]  # type: ignore[attr-defined]
        smoothing[tensor] = helper.make_node(
            "Mul", [tensor, inverse.name], [smoothed], name=f"{scope}/smoothing"
        )
        for node in nodes:
            node.input[0] = smoothed  # type: ignore[attr-defined]
    # Each Mul goes right after the node that makes its input, keeping the graph sorted.
    ordered = []
    for node in graph.node:
        ordered.append(node)
        ordered.extend(smoothing[out] for out in node.output if out in smoothing)
    del graph.node[:]
    graph.node.extend(ordered)
    return len(smoothing)


def quantize_static_int8(
    source: Path,
    target: Path,
    tokenizer_json: Path,
    max_length: int,
    keep_float: list[str] | None = None,
    percentile: float = PERCENTILE,
) -> Path:
    """Write a QDQ int8 copy of `source` to `target` atomically; MatMuls with constant weights only
    (Q·Kᵀ and attention·V stay fp32), `keep_float` node names (default: `sensitive_nodes`) too."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantType
    from onnxruntime.quantization.calibrate import TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    model = onnx.load(str(source))
    exclude = sensitive_nodes(source) if keep_float is None else keep_float
    input_names = [i.name for i in model.graph.input]
    batches = calibration_batches(tokenizer_json, max_length, input_names)
    smooth_outlier_channels(model, batches, exclude)
    wanted = quantized_inputs(model, exclude)
    ranges = activation_ranges(model, sorted(wanted), batches, percentile)
    data = TensorsData(
        CalibrationMethod.MinMax,
        {
            name: TensorData(lowest=np.float32(low), highest=np.float32(high))
            for name, (low, high) in ranges.items()
        },
    )
    nodes = [node for names in wanted.values() for node in names]
    quantizer = QDQQuantizer(
        model,
        True,
        REDUCE_RANGE,
        QuantType.QInt8,
        QuantType.QUInt8,
        data,
        nodes,
        exclude,
        ["MatMul"],
        {"MatMulConstBOnly": True, "OpTypesToExcludeOutputQuantization": ["MatMul"]},
    )
    quantizer.quantize_model()
    with atomic_write_path(target) as staged:
        onnx.save(quantizer.model.model, str(staged))
    return target


def static_int8_onnx(source: Path, tokenizer_json: Path, max_length: int) -> Path:
    """The cached static int8 copy of the graph at `source`, built on first use (~1 minute)."""
    import hashlib

    from embedserve.models.cache import cache_root
    from embedserve.models.graph import file_hash

    # The scales depend on the tokenizer (which ids the corpus becomes) as well as the weights.
    tok_hash = hashlib.sha256(tokenizer_json.read_bytes()).hexdigest()[:8]
    key = f"{file_hash(source)[:32]}-{tok_hash}-{max_length}-int8s-v{STATIC_INT8_VERSION}"
    target = cache_root() / "compiled" / key / "model.onnx"
    if not target.exists():
        quantize_static_int8(source, target, tokenizer_json, max_length)
    return target
