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

Smoothing can't help the post-GELU FFN inputs (no LayerNorm to divide), where one to four
channels reach 4-20x the rest. Those channels are split off instead (LLM.int8(), Dettmers et al.
2022): multiplied in float beside an int8 product of the other channels, whose range no longer
holds them (`split_outlier_channels`).

What runs in int8 is checked, not assumed: the int8 graph's vectors are compared with the float
graph's on texts of the same corpus that calibration did not see (paragraphs, hundreds of short
fragments of them, and the lines of its interactive examples), and the least quantizable inputs
get their outliers split off, then go back to float, until the worst of them keeps
`CHECK_MIN_COSINE` (`choose_int8_mix`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedserve.fileio import atomic_write_path
from embedserve.models.cache import compiled_graph, file_hash
from embedserve.tokenizer_pipeline import tokenizer_digest

log = logging.getLogger(__name__)

# Bump when the code of the recipe changes; its constants and texts are part of the cache key
# too (`static_int8_key`), so changing those rebuilds cached graphs without a bump.
STATIC_INT8_VERSION = 8
CALIBRATION_TEXTS = 256
# Texts of the same corpus, unseen by calibration, that check the chosen mix (`check_texts`):
# paragraphs, short fragments of paragraphs, lines of interactive examples.
CHECK_PARAGRAPHS = 64
CHECK_FRAGMENTS = 768
CHECK_EXAMPLE_LINES = 256
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
# LLM.int8()'s decomposition (Dettmers et al. 2022): a channel whose peak |x| is over this many
# times the 99th percentile of its tensor's channel peaks is multiplied in float, beside an int8
# product of the rest. Post-GELU FFN inputs have 1-4 such channels (MiniLM's layer 0: 24.7 against
# a 99th percentile of 5.1; MPNet's layer 7: 102 against 4.5), and they alone set the range.
OUTLIER_PEAK_RATIO = 2.0
# At most this many per tensor: a few channels keep the float part's cost small.
MAX_OUTLIER_CHANNELS = 8
# Name suffix of the float MatMuls over outlier channels, which are never quantized.
OUTLIER_SUFFIX = "/outlier_channels"
# The int8 graph must keep this cosine (mean-pooled, worst check text) against the float graph;
# outliers are split off and MatMuls go back to float, least quantizable first, until it does.
# A worst case is a tail statistic: it sinks with more texts, and most with short ones. 128
# check texts (64 of them short) kept 0.990 while one of the 200 reference texts sank to 0.983
# ("1234567890"; all-mpnet-base-v2). Over a set like today's (~1,200 texts, mostly short), the
# reference texts' worst sat 0.002-0.017 above the check's in each of 25 mixes of both catalog
# models measured (bench/NOTES.md). So 0.988 here keeps the int8 floor (0.985) with room.
CHECK_MIN_COSINE = 0.988


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


@functools.cache
def _example_lines() -> tuple[str, ...]:
    """The lines of the documentation's interactive examples, input and output: code, numbers
    and literals, which its prose lacks and which users send."""
    from pydoc_data.topics import topics

    lines = []
    for key in sorted(topics):
        for block in topics[key].split("\n\n"):
            if block.lstrip().startswith(">>>"):
                for line in block.splitlines():
                    text = re.sub(r"\s+", " ", line).strip()
                    text = text.removeprefix(">>>").removeprefix("...").strip()
                    if text:
                        lines.append(text)
    return tuple(dict.fromkeys(lines))


def _spread(items: Sequence[str], count: int) -> list[str]:
    """`count` of `items`, evenly spread over them (all of them when there are fewer)."""
    if count >= len(items):
        return list(items)
    return [items[i * len(items) // count] for i in range(count)]


def check_texts(
    paragraphs: int = CHECK_PARAGRAPHS,
    fragments: int = CHECK_FRAGMENTS,
    example_lines: int = CHECK_EXAMPLE_LINES,
) -> list[str]:
    """Texts of the documentation that `calibration_texts` leaves out: `paragraphs` paragraphs,
    `fragments` short fragments (the first 1 to 6 words of a paragraph) and `example_lines`
    lines of interactive examples. Short texts average the fewest token states, so int8's error
    shows most in them (and queries are short); many of them, because the check bounds a worst
    case, and a few hundred texts' worst is deeper than a few dozen's."""
    seen = set(calibration_texts())
    unseen = [text for text in _documentation_paragraphs() if text not in seen]
    cut = [" ".join(text.split()[: 1 + i % 6]) for i, text in enumerate(unseen)]
    short = [text for text in dict.fromkeys(cut) if text not in seen]
    taken = seen.union(short)
    examples = [text for text in _example_lines() if text not in taken]
    return (
        _spread(unseen, paragraphs) + _spread(short, fragments) + _spread(examples, example_lines)
    )


def calibration_batches(
    tokenizer_json: Path,
    max_length: int,
    tokenizer_mode: str,
    input_names: list[str],
    texts: list[str] | None = None,
) -> list[dict[str, np.ndarray]]:
    """`texts` (default: the calibration corpus) as length-sorted model feeds, tokenized as the
    served model tokenizes (`tokenizer_mode`: tokenizer_pipeline.load_tokenizer)."""
    from embedserve.planning import pad_batch
    from embedserve.tokenization import ModelTokenizer

    tokenizer = ModelTokenizer(tokenizer_json, max_length, tokenizer_mode)
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
        if (
            node.op_type == "MatMul"
            and node.input[1] in constants
            and node.name not in keep_float
            and not node.name.endswith(OUTLIER_SUFFIX)
        ):
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


@dataclass(frozen=True)
class ChannelStats:
    """One activation tensor's extremes and mean square per channel (its last axis)."""

    low: np.ndarray
    high: np.ndarray
    mean_square: np.ndarray

    @property
    def peaks(self) -> np.ndarray:
        return np.maximum(-self.low, self.high)

    def tensor(self, excluding: np.ndarray | None = None) -> ActivationStats:
        """The whole tensor's stats, leaving out the `excluding` channels."""
        kept = np.ones(self.low.shape, dtype=bool)
        if excluding is not None:
            kept[excluding] = False
        return ActivationStats(
            min(0.0, float(self.low[kept].min())),
            max(0.0, float(self.high[kept].max())),
            float(np.sqrt(self.mean_square[kept].mean())),
        )


def channel_stats(
    model: object, tensors: list[str], batches: list[dict[str, np.ndarray]]
) -> dict[str, ChannelStats]:
    """Per-channel range and mean square of each tensor over the real tokens of the batches.

    Padding positions are left out: onnxruntime's own calibrators count them, and a padded row's
    states are not what any text produces. The range is the extremes, not a percentile: BERT's
    LayerNorm outputs have a few outlier channels that carry meaning, and clipping them at the
    99.99th percentile dropped the minimum cosine to 0.58 (bench/NOTES.md §R2.3).
    """
    session = _session_with_outputs(model, tensors)
    low: dict[str, np.ndarray] = {}
    high: dict[str, np.ndarray] = {}
    squares: dict[str, np.ndarray] = {}
    rows_seen = dict.fromkeys(tensors, 0)
    for feeds in batches:
        real = feeds["attention_mask"].astype(bool)
        for name, value in zip(tensors, session.run(tensors, feeds)):  # type: ignore[attr-defined]
            # [real tokens, channels]; a tensor without a token axis (after pooling) as it is.
            rows = value[real] if value.ndim == 3 else value.reshape(-1, value.shape[-1])
            rows_seen[name] += rows.shape[0]
            if name not in low:
                low[name], high[name] = rows.min(axis=0), rows.max(axis=0)
                squares[name] = np.square(rows, dtype=np.float64).sum(axis=0)
                continue
            low[name] = np.minimum(low[name], rows.min(axis=0))
            high[name] = np.maximum(high[name], rows.max(axis=0))
            squares[name] += np.square(rows, dtype=np.float64).sum(axis=0)
    return {
        name: ChannelStats(low[name], high[name], squares[name] / max(rows_seen[name], 1))
        for name in tensors
    }


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
    peaks = {t: stats.peaks for t, stats in channel_stats(model, sorted(readers), batches).items()}
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


def outlier_channels(peaks: np.ndarray) -> np.ndarray:
    """The channels whose peak is over `OUTLIER_PEAK_RATIO` times the tensor's 99th percentile
    channel peak, the highest `MAX_OUTLIER_CHANNELS` of them, in ascending order."""
    threshold = OUTLIER_PEAK_RATIO * np.quantile(peaks, 0.99)
    highest = np.argsort(peaks)[::-1][:MAX_OUTLIER_CHANNELS]
    return np.sort(highest[peaks[highest] > threshold])


def int8_input(tensor: str) -> str:
    """The copy of `tensor` that its int8 MatMuls read once its outlier channels are split off."""
    return f"{tensor}/int8_input"


def split_outlier_channels(model: object, channels: dict[str, np.ndarray]) -> None:
    """Multiply the given outlier channels of each tensor in float, in place.

    ``x @ w`` becomes ``x' @ w0 + x[..., c] @ w[c]`` for every quantizable MatMul reading
    ``x``: ``w0`` is ``w`` with the outlier rows ``c`` zeroed, and ``x'`` (`int8_input`) is a
    copy of ``x`` whose int8 range is calibrated without ``c``; the int8 copy saturates those
    channels, and their zero weights make that harmless. ``x[..., c] @ w[c]`` is a small float
    MatMul (`OUTLIER_SUFFIX`). The copy exists because the quantizer hands its int8 values to
    every reader of the tensor it quantizes, and the float part needs the float ones.
    """
    from onnx import helper, numpy_helper

    graph = model.graph  # type: ignore[attr-defined]
    weights = {init.name: init for init in graph.initializer}
    by_name = {node.name: node for node in graph.node}
    readers = quantized_inputs(model, [])
    # Reader name -> nodes that go right before it (the copy and the Gather) and right after it.
    before: dict[str, list[object]] = {}
    after: dict[str, list[object]] = {}
    for tensor, outliers in channels.items():
        index = numpy_helper.from_array(outliers.astype(np.int64), name=f"{tensor}/outlier_index")
        graph.initializer.append(index)
        gathered = f"{tensor}/outliers"
        names = readers[tensor]  # in graph order
        before[names[0]] = [
            helper.make_node("Identity", [tensor], [int8_input(tensor)], name=f"{tensor}/copy"),
            helper.make_node(
                "Gather", [tensor, index.name], [gathered], name=f"{tensor}/outliers", axis=-1
            ),
        ]
        for name in names:
            node = by_name[name]
            node.input[0] = int8_input(tensor)
            w = numpy_helper.to_array(weights[node.input[1]])
            float_rows = numpy_helper.from_array(w[outliers], name=f"{name}/outlier_weight")
            graph.initializer.append(float_rows)
            w = w.copy()
            w[outliers] = 0.0
            weights[node.input[1]].CopyFrom(numpy_helper.from_array(w, node.input[1]))
            output = node.output[0]
            node.output[0] = f"{output}/int8_part"
            after[name] = [
                helper.make_node(
                    "MatMul",
                    [gathered, float_rows.name],
                    [f"{output}/outlier_part"],
                    name=name + OUTLIER_SUFFIX,
                ),
                helper.make_node(
                    "Add",
                    [node.output[0], f"{output}/outlier_part"],
                    [output],
                    name=f"{name}/add_outliers",
                ),
            ]
    ordered = []
    for node in graph.node:
        ordered.extend(before.get(node.name, []))
        ordered.append(node)
        ordered.extend(after.get(node.name, []))
    del graph.node[:]
    graph.node.extend(ordered)


def qdq_int8_model(model: object, stats: dict[str, ActivationStats], keep_float: list[str]):
    """`model` quantized to QDQ int8, in place (pass a copy you own): MatMuls with constant
    weights only (Q·Kᵀ and attention·V stay fp32), except the `keep_float` node names;
    activation scales from `stats`."""
    from onnxruntime.quantization import CalibrationMethod, QuantType
    from onnxruntime.quantization.calibrate import TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    wanted = quantized_inputs(model, keep_float)
    if not wanted:  # every MatMul kept in float (an empty node list would mean "all" to ORT)
        return model
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
        model,
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
    split: dict[str, list[int]]  # tensor -> its outlier channels, multiplied in float
    keep_float: list[str]  # MatMuls wholly in float
    quantized: int  # MatMuls in int8
    check_min_cosine: float


class Int8Search:
    """int8 mixes of one float graph, each checked against the float graph's vectors on one set
    of check texts. `choose` picks the cheapest that keeps a cosine; asking it for several
    cosines shares the float graph's vectors and the attempts every search starts with (all
    int8, then every outlier split off), which cost a quantization and a check each."""

    def __init__(
        self,
        model: object,
        stats: dict[str, ChannelStats],
        check_batches: list[dict[str, np.ndarray]],
    ) -> None:
        self.model = model
        self.stats = stats
        self.check_batches = check_batches
        self.readers = quantized_inputs(model, [])
        self.order = sorted(
            self.readers, key=lambda tensor: stats[tensor].tensor().crest, reverse=True
        )
        self.outliers = {tensor: outlier_channels(stats[tensor].peaks) for tensor in self.order}
        self.splittable = [tensor for tensor in self.order if self.outliers[tensor].size]
        self.reference = pooled_vectors(model, check_batches)
        self._whole_ranges = {tensor: stats[tensor].tensor() for tensor in self.order}

    def attempt(self, split: Sequence[str], floats: Sequence[str] = ()) -> Int8Choice:
        """The graph with `split`'s outlier channels and `floats`' MatMuls in float, checked."""
        import onnx

        split = [tensor for tensor in split if tensor not in floats]
        candidate = onnx.ModelProto()  # the one copy: splitting and quantizing work in place
        candidate.CopyFrom(self.model)  # type: ignore[arg-type]
        split_outlier_channels(candidate, {tensor: self.outliers[tensor] for tensor in split})
        ranges = self._whole_ranges | {
            int8_input(t): self.stats[t].tensor(excluding=self.outliers[t]) for t in split
        }
        keep = [node for tensor in floats for node in self.readers[tensor]]
        candidate = qdq_int8_model(candidate, ranges, keep)
        cosines = (pooled_vectors(candidate, self.check_batches) * self.reference).sum(axis=1)
        quantized = sum(len(self.readers[tensor]) for tensor in self.order if tensor not in floats)
        split_channels = {tensor: self.outliers[tensor].tolist() for tensor in split}
        return Int8Choice(candidate, split_channels, keep, quantized, float(cosines.min()))

    @functools.cached_property
    def all_int8(self) -> Int8Choice:
        return self.attempt([])

    @functools.cached_property
    def all_split(self) -> Int8Choice:
        return self.attempt(self.splittable)

    def choose(self, min_cosine: float = CHECK_MIN_COSINE) -> Int8Choice:
        """The cheapest int8 graph whose worst check text keeps `min_cosine` against the float
        graph (`choose_int8_mix`)."""

        def fewest(
            count: int, make: Callable[[int], Int8Choice], passing: Int8Choice
        ) -> Int8Choice:
            """A passing attempt with a small n in 1..count, given make(count) passes: n = 1, 2,
            4, ... until one passes, then a binary search in the gap below it."""
            low, high, best = 1, count, passing
            n = 1
            while n < count:
                choice = make(n)
                if choice.check_min_cosine >= min_cosine:
                    best, high = choice, n
                    break
                low, n = n + 1, 2 * n
            while low < high:
                middle = (low + high) // 2
                choice = make(middle)
                if choice.check_min_cosine >= min_cosine:
                    best, high = choice, middle
                else:
                    low = middle + 1
            return best

        if self.all_int8.check_min_cosine >= min_cosine:
            return self.all_int8
        splittable = self.splittable
        if self.all_split.check_min_cosine >= min_cosine:
            return fewest(len(splittable), lambda n: self.attempt(splittable[:n]), self.all_split)
        # Every outlier split off; now whole inputs back to float, by their crest without outliers.
        by_crest = sorted(
            self.order,
            key=lambda tensor: self.stats[tensor].tensor(self.outliers[tensor]).crest,
            reverse=True,
        )
        every_matmul = [n for names in self.readers.values() for n in names]
        float_graph = Int8Choice(self.model, {}, every_matmul, 0, 1.0)
        return fewest(len(by_crest), lambda n: self.attempt(splittable, by_crest[:n]), float_graph)


def choose_int8_mix(
    model: object,
    stats: dict[str, ChannelStats],
    check_batches: list[dict[str, np.ndarray]],
    min_cosine: float = CHECK_MIN_COSINE,
) -> Int8Choice:
    """The cheapest int8 graph whose worst check text keeps `min_cosine` against the float graph.

    In order, the first that passes:
    1. every MatMul in int8 (all-MiniLM-L6-v2 nearly passes so);
    2. the outlier channels (`outlier_channels`) of the widest-crested inputs split off into
       float, the fewest inputs that pass (MiniLM: the FFN inputs of layers 0-2);
    3. every outlier split off, and whole MatMuls back to float, widest crest first, the fewest
       that pass (the float graph always does).
    "The fewest" is searched from the cheap end (1, 2, 4, ... then halving the last gap), since
    few inputs usually need it and each try costs a quantization and a check. One more input
    treated is assumed not to make the check worse; it can by a little (a text's error moves
    with every rounding), so the answer is a passing mix with few inputs treated, not provably
    the fewest.
    """
    return Int8Search(model, stats, check_batches).choose(min_cosine)


def quantize_static_int8(
    source: Path, target: Path, tokenizer_json: Path, max_length: int, tokenizer_mode: str
) -> Int8Choice:
    """Write a QDQ int8 copy of `source` to `target` atomically, with the MatMuls
    `choose_int8_mix` keeps in float. The choice is logged and written into the graph's metadata
    (`embedserve.int8.*`)."""
    import onnx

    model = onnx.load(str(source))
    input_names = [i.name for i in model.graph.input]
    batches = calibration_batches(tokenizer_json, max_length, tokenizer_mode, input_names)
    smooth_outlier_channels(model, batches, [])
    stats = channel_stats(model, sorted(quantized_inputs(model, [])), batches)
    check = calibration_batches(
        tokenizer_json, max_length, tokenizer_mode, input_names, check_texts()
    )
    choice = choose_int8_mix(model, stats, check)
    onnx.helper.set_model_props(
        choice.model,
        {
            "embedserve.int8.float_matmuls": ",".join(choice.keep_float),
            "embedserve.int8.outlier_channels": json.dumps(choice.split),
            "embedserve.int8.check_min_cosine": f"{choice.check_min_cosine:.6f}",
        },
    )
    log.info(
        "static int8 of %s: %d MatMuls in int8 (outlier channels of %d inputs in float), "
        "%d kept in float; worst check text cos %.4f",
        source,
        choice.quantized,
        len(choice.split),
        len(choice.keep_float),
        choice.check_min_cosine,
    )
    with atomic_write_path(target) as staged:
        onnx.save(choice.model, str(staged))
    return choice


def static_int8_key(
    source: Path, tokenizer_json: Path, max_length: int, tokenizer_mode: str
) -> str:
    """The cache key of the int8 copy of `source`: the graph, the tokenizer (which ids the corpus
    becomes: its mode and every file its pipeline is built from, tokenizer_sources), the
    length, the recipe's version and constants, and the very texts that calibrate and check it
    (they come from Python's documentation, which differs between Pythons)."""
    recipe = json.dumps(
        [
            STATIC_INT8_VERSION,
            CALIBRATION_BATCH,
            CHECK_MIN_COSINE,
            REDUCE_RANGE,
            SMOOTHING_ALPHA,
            OUTLIER_PEAK_RATIO,
            MAX_OUTLIER_CHANNELS,
            calibration_texts(),
            check_texts(),
        ]
    )
    recipe_hash = hashlib.sha256(recipe.encode()).hexdigest()[:8]
    tok_hash = tokenizer_digest(tokenizer_json, tokenizer_mode)[:8]
    return (
        f"{file_hash(source)[:32]}-{tok_hash}-{max_length}"
        f"-int8s-v{STATIC_INT8_VERSION}-{recipe_hash}"
    )


def static_int8_onnx(
    source: Path, tokenizer_json: Path, max_length: int, tokenizer_mode: str
) -> Path:
    """The cached static int8 copy of the graph at `source`, built on first use (20 s to minutes)."""
    target = compiled_graph(static_int8_key(source, tokenizer_json, max_length, tokenizer_mode))
    if not target.exists():
        quantize_static_int8(source, target, tokenizer_json, max_length, tokenizer_mode)
    return target
