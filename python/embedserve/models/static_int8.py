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

Which MatMuls run in int8 is checked, not assumed: the int8 graph's vectors are compared with
the float graph's on paragraphs and short fragments of the same corpus that calibration did not
see, and MatMuls go back to float, least quantizable first, until the worst of them keeps
`CHECK_MIN_COSINE` (`choose_int8_mix`). all-MiniLM-L6-v2 keeps 3 of its 36 in float,
all-mpnet-base-v2 9 of 72 (post-GELU FFN inputs, the widest-ranged activations in both).
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedserve.fileio import atomic_write_path

log = logging.getLogger(__name__)

# Bump when the recipe below changes, so cached graphs are rebuilt.
STATIC_INT8_VERSION = 6
CALIBRATION_TEXTS = 256
# Paragraphs of the same corpus, unseen by calibration, that check the chosen mix (below).
CHECK_TEXTS = 64
CALIBRATION_BATCH = 16
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
# The int8 graph must keep this cosine (mean-pooled, worst check text) against the float
# graph; MatMuls go back to float, least quantizable first, until it does. It sits above the
# int8 precision's floor (0.985 over the reference texts) to leave room for other texts.
CHECK_MIN_COSINE = 0.99


@functools.cache  # calibration and check texts are both cut from it, in one build
def _documentation_paragraphs() -> tuple[str, ...]:
    from pydoc_data.topics import topics

    paragraphs = []
    for key in sorted(topics):
        for block in topics[key].split("\n\n"):
            text = re.sub(r"\s+", " ", block).strip()
            # Prose only: code samples and one-line headings calibrate nothing a user sends.
            if len(text.split()) >= 8 and not text.startswith((">>>", "...", "*")):
                paragraphs.append(text)
    return tuple(dict.fromkeys(paragraphs))  # some topics share paragraphs


def calibration_texts(count: int = CALIBRATION_TEXTS) -> list[str]:
    """`count` paragraphs of Python's documentation, spread over all topics, in a fixed order."""
    paragraphs = _documentation_paragraphs()
    step = max(1, len(paragraphs) // count)
    return list(paragraphs[::step][:count])


def check_texts(count: int = CHECK_TEXTS) -> list[str]:
    """`count` paragraphs of the same documentation that `calibration_texts` leaves out, and as
    many short fragments of them (their first 1 to 6 words): short texts average the fewest
    token states, so int8's error shows most in them, and queries are short."""
    seen = set(calibration_texts())
    unseen = [text for text in _documentation_paragraphs() if text not in seen]
    paragraphs = unseen[:: max(1, len(unseen) // count)][:count]
    fragments = [" ".join(text.split()[: 1 + i % 6]) for i, text in enumerate(paragraphs)]
    return paragraphs + fragments


def sensitive_nodes(graph_path: Path) -> list[str]:
    """MatMuls the dynamic int8 copy (`models/quantize.py`) keeps in float, by a fixed rule from
    round 2's measurements (bench/NOTES.md §R2.3; the static copy checks instead):

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
    tokenizer_json: Path, max_length: int, input_names: list[str], texts: list[str] | None = None
) -> list[dict[str, np.ndarray]]:
    """`texts` (default: the calibration corpus) as length-sorted model feeds."""
    from embedserve.planning import pad_batch
    from embedserve.tokenization import ModelTokenizer

    tokenizer = ModelTokenizer(tokenizer_json, max_length)
    content = tokenizer.content_ids(calibration_texts() if texts is None else texts)
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


@dataclass(frozen=True)
class ActivationStats:
    """One activation tensor over the real tokens of the calibration batches."""

    low: float  # <= 0: uint8's range must hold zero exactly
    high: float  # >= 0
    rms: float

    @property
    def crest(self) -> float:
        """Range over RMS. A uniform 8-bit quantizer's signal-to-noise ratio is about
        59 dB - 20·log10(crest), so the widest crest is the least quantizable tensor."""
        return (self.high - self.low) / max(self.rms, 1e-12)


def activation_stats(
    model: object, tensors: list[str], batches: list[dict[str, np.ndarray]]
) -> dict[str, ActivationStats]:
    """Range and RMS of each tensor over the real tokens of the calibration batches.

    Padding positions are left out: onnxruntime's own calibrators count them, and a padded row's
    states are not what any text produces. The range is the extremes, not a percentile: BERT's
    LayerNorm outputs have a few outlier channels that carry meaning, and clipping them at the
    99.99th percentile dropped the minimum cosine to 0.58 (bench/NOTES.md §R2.3).
    """
    session = _session_with_outputs(model, tensors)
    low = dict.fromkeys(tensors, 0.0)
    high = dict.fromkeys(tensors, 0.0)
    squares = dict.fromkeys(tensors, 0.0)
    count = dict.fromkeys(tensors, 0)
    for feeds in batches:
        real = feeds["attention_mask"].astype(bool)
        for name, value in zip(tensors, session.run(tensors, feeds)):  # type: ignore[attr-defined]
            values = value[real] if value.ndim == 3 else value
            low[name] = min(low[name], float(values.min()))
            high[name] = max(high[name], float(values.max()))
            squares[name] += float(np.square(values, dtype=np.float64).sum())
            count[name] += values.size
    return {
        name: ActivationStats(low[name], high[name], (squares[name] / max(count[name], 1)) ** 0.5)
        for name in tensors
    }


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


def qdq_int8_model(model: object, stats: dict[str, ActivationStats], keep_float: list[str]):
    """A QDQ int8 copy of `model`: MatMuls with constant weights only (Q·Kᵀ and attention·V stay
    fp32), except the `keep_float` node names; activation scales from `stats`."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantType
    from onnxruntime.quantization.calibrate import TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # type: ignore[arg-type]
    wanted = quantized_inputs(copy, keep_float)
    if not wanted:  # every MatMul kept in float (an empty node list would mean "all" to ORT)
        return copy
    data = TensorsData(
        CalibrationMethod.MinMax,
        {
            name: TensorData(
                lowest=np.float32(stats[name].low), highest=np.float32(stats[name].high)
            )
            for name in wanted
        },
    )
    nodes = [node for names in wanted.values() for node in names]
    quantizer = QDQQuantizer(
        copy,
        True,
        REDUCE_RANGE,
        QuantType.QInt8,
        QuantType.QUInt8,
        data,
        nodes,
        keep_float,
        ["MatMul"],
        {"MatMulConstBOnly": True, "OpTypesToExcludeOutputQuantization": ["MatMul"]},
    )
    quantizer.quantize_model()
    return quantizer.model.model


def pooled_vectors(model: object, batches: list[dict[str, np.ndarray]]) -> np.ndarray:
    """Unit-length mean-pooled vectors of the batches' texts (or the graph's own pooled output)."""
    session = _session_with_outputs(model, [])
    vectors = []
    for feeds in batches:
        hidden = session.run(None, feeds)[0]  # type: ignore[attr-defined]
        if hidden.ndim == 3:
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            hidden = (hidden * mask).sum(axis=1) / mask.sum(axis=1)
        vectors.append(hidden / np.linalg.norm(hidden, axis=1, keepdims=True))
    return np.concatenate(vectors)


@dataclass(frozen=True)
class Int8Choice:
    model: object  # the QDQ onnx.ModelProto
    keep_float: list[str]
    quantized: int  # MatMuls in int8
    check_min_cosine: float


def choose_int8_mix(
    model: object,
    stats: dict[str, ActivationStats],
    check_batches: list[dict[str, np.ndarray]],
    min_cosine: float = CHECK_MIN_COSINE,
) -> Int8Choice:
    """The int8 graph with the most MatMuls in int8 whose worst check text keeps `min_cosine`
    against the float graph.

    All of them first: all-MiniLM-L6-v2 passes so. Otherwise MatMul inputs go back to float in
    order of their crest (range over RMS: the least quantizable first), and a binary search finds
    the fewest that must; all-mpnet-base-v2's post-GELU FFN inputs reach 60-100 at an RMS of ~0.5,
    and those are the ones it finds. Keeping one more input in float is assumed never to make the
    check worse, which is what the binary search needs.
    """
    readers = quantized_inputs(model, [])
    order = sorted(readers, key=lambda tensor: stats[tensor].crest, reverse=True)
    reference = pooled_vectors(model, check_batches)

    def attempt(count: int) -> Int8Choice:
        keep = [node for tensor in order[:count] for node in readers[tensor]]
        candidate = qdq_int8_model(model, stats, keep)
        cosines = (pooled_vectors(candidate, check_batches) * reference).sum(axis=1)
        quantized = sum(len(readers[tensor]) for tensor in order[count:])
        return Int8Choice(candidate, keep, quantized, float(cosines.min()))

    best = attempt(0)
    if best.check_min_cosine >= min_cosine:
        return best
    low, high = 1, len(order)  # `high` inputs in float always passes: that is the float graph
    best = Int8Choice(model, [n for names in readers.values() for n in names], 0, 1.0)
    while low < high:
        middle = (low + high) // 2
        choice = attempt(middle)
        if choice.check_min_cosine >= min_cosine:
            best, high = choice, middle
        else:
            low = middle + 1
    return best


def quantize_static_int8(
    source: Path, target: Path, tokenizer_json: Path, max_length: int
) -> Int8Choice:
    """Write a QDQ int8 copy of `source` to `target` atomically, with the MatMuls
    `choose_int8_mix` keeps in float. The choice is logged and written into the graph's metadata
    (`embedserve.int8.*`)."""
    import onnx

    model = onnx.load(str(source))
    input_names = [i.name for i in model.graph.input]
    batches = calibration_batches(tokenizer_json, max_length, input_names)
    smooth_outlier_channels(model, batches, [])
    stats = activation_stats(model, sorted(quantized_inputs(model, [])), batches)
    check = calibration_batches(tokenizer_json, max_length, input_names, check_texts())
    choice = choose_int8_mix(model, stats, check)
    onnx.helper.set_model_props(
        choice.model,
        {
            "embedserve.int8.float_matmuls": ",".join(choice.keep_float),
            "embedserve.int8.check_min_cosine": f"{choice.check_min_cosine:.6f}",
        },
    )
    log.info(
        "static int8 of %s: %d MatMuls in int8, %d kept in float; worst check text cos %.4f",
        source,
        choice.quantized,
        len(choice.keep_float),
        choice.check_min_cosine,
    )
    with atomic_write_path(target) as staged:
        onnx.save(choice.model, str(staged))
    return choice


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
