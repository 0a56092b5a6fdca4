"""Precisions (fp32, bf16, int8) on both runtimes: fidelity against sentence-transformers' vectors
for every catalog model with reference data in tests/data, and the argument rules around them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from embedserve.engine import Engine
from embedserve.models import find_entry
from embedserve.models.quantize import sensitive_nodes
from embedserve.models.static_int8 import (
    MAX_OUTLIER_CHANNELS,
    OUTLIER_SUFFIX,
    calibration_texts,
    check_texts,
)
from embedserve.precision import (
    PRECISIONS,
    get_precision,
    resolve_precision,
)
from embedserve.runtime.openvino_session import cpu_has_native_bf16, openvino_available

from ..support import cosines

DATA = Path(__file__).parents[1] / "data"
# Every catalog model that has sentence-transformers reference vectors here.
REFERENCE_MODELS = sorted(
    p.name.removesuffix(".public.json")
    for p in DATA.glob("*.public.json")
    if find_entry(p.name.removesuffix(".public.json")) is not None
)
COMBINATIONS = [(p.name, runtime) for p in PRECISIONS.values() for runtime in p.runtimes]


def _reference(name: str) -> dict:
    ref = json.loads((DATA / f"{name}.public.json").read_text())
    ref["normalized"] = np.asarray(ref["normalized"], dtype=np.float32)
    return ref


@pytest.fixture(scope="module")
def engines():
    cache: dict[tuple[str, str, str], Engine] = {}

    def get(model: str, precision: str, runtime: str) -> Engine:
        key = (model, precision, runtime)
        if key not in cache:
            cache[key] = Engine.from_pretrained(
                model, precision=precision, runtime=runtime, providers="cpu"
            )
        return cache[key]

    return get


def test_openvino_is_installed_where_tests_run():
    # The test extra installs it, so the OpenVINO half of this file runs in CI rather than skips.
    assert openvino_available()


@pytest.mark.parametrize("model", REFERENCE_MODELS)
@pytest.mark.parametrize(("precision", "runtime"), COMBINATIONS)
def test_each_precision_holds_its_fidelity_floor(engines, embedded, model, precision, runtime):
    ref = _reference(model)
    engine = engines(model, precision, runtime)
    assert engine.model_info.precision == precision
    assert engine.model_info.provider == (
        "OpenVINO:CPU" if runtime == "openvino" else "CPUExecutionProvider"
    )
    cos = cosines(embedded(engine, ref["texts"]).embeddings, ref["normalized"])
    floor = get_precision(precision)
    if precision == "bf16":
        # bf16's floor is for real bf16; without it OpenVINO runs f32, which must be exact (and
        # is the fp32 engine's computation: `embedded` keys on the precision the session runs).
        native = cpu_has_native_bf16()
        assert engine.session.inference_precision == ("bf16" if native else "f32")
        floor = floor if native else get_precision("fp32")
    print(f"{model} {precision} on {runtime}: min cos {cos.min():.6f}, mean {cos.mean():.6f}")
    assert cos.min() >= floor.min_cosine, f"worst text {cos.argmin()}: {cos.min()}"
    assert cos.mean() >= floor.mean_cosine


def test_static_int8_vectors_do_not_depend_on_the_batch(engines, reference):
    # Fixed activation scales: a text alone and the same text among 63 others get the same
    # vector (dynamic int8 scaled per batch and moved it to cosine ~0.99).
    engine = engines("all-MiniLM-L6-v2", "int8", "onnxruntime")
    texts = reference["texts"][:64]
    together = engine.embed(texts).embeddings
    alone = np.concatenate([engine.embed([t]).embeddings for t in texts[:8]])
    assert cosines(alone, together[:8]).min() >= 0.99999


def _float_matmuls(graph) -> set[str]:
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    return {n.name for n in graph.node if n.op_type == "MatMul" and n.input[0] not in dequantized}


def test_int8_graph_records_its_mix_and_keeps_exactly_that_in_float(engines):
    import onnx
    from embedserve.models.static_int8 import CHECK_MIN_COSINE

    engine = engines("all-MiniLM-L6-v2", "int8", "onnxruntime")
    model = onnx.load(str(engine.session.path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    recorded = {name for name in props["embedserve.int8.float_matmuls"].split(",") if name}
    split = json.loads(props["embedserve.int8.outlier_channels"])
    assert float(props["embedserve.int8.check_min_cosine"]) >= CHECK_MIN_COSINE
    attention_products = {
        f"layer.{n}/attention/{part}" for n in range(6) for part in ("scores", "context")
    }
    # Beyond those, only the float MatMuls over split tensors' outlier channels.
    outlier_parts = [n for n in model.graph.node if n.name.endswith(OUTLIER_SUFFIX)]
    assert {n.input[0] for n in outlier_parts} == {f"{t}/outliers" for t in split}
    assert _float_matmuls(model.graph) == recorded | attention_products | {
        n.name for n in outlier_parts
    }
    gathered = {n.input[0]: n.input[1] for n in model.graph.node if n.op_type == "Gather"}
    weights = {i.name: i for i in model.graph.initializer}
    for tensor, channels in split.items():
        assert 0 < len(channels) <= MAX_OUTLIER_CHANNELS
        assert onnx.numpy_helper.to_array(weights[gathered[tensor]]).tolist() == channels
    # MiniLM's FFN inputs of layers 0-2 need their outlier channels split off to pass the check
    # (bench/NOTES.md); with those split, every one of the 36 weight MatMuls runs in int8.
    assert {"layer.0/mlp/gelu", "layer.1/mlp/gelu", "layer.2/mlp/gelu"} <= set(split)
    assert not recorded


def _minilm_graph(minilm_dir: Path, texts: list[str] | None = None):
    """MiniLM's fp32 graph, loaded afresh (the passes under test change it in place), and
    `texts` (default: the calibration corpus) as its feeds."""
    import onnx
    from embedserve.models import onnx_for
    from embedserve.models.static_int8 import calibration_batches

    model = onnx.load(str(onnx_for(minilm_dir)))
    names = [i.name for i in model.graph.input]
    return model, calibration_batches(
        minilm_dir / "tokenizer.json", 256, "transformers", names, texts
    )


# The calibration batches whose outputs a graph pass must leave unchanged: the last three (the
# longest), held out from the four whose peaks the passes read.
HELD_OUT = slice(-3, None)


@pytest.fixture(scope="module")
def float_outputs(minilm_dir) -> list[np.ndarray]:
    """MiniLM's fp32 graph's outputs for the held-out calibration batches, run once for the tests
    that check a pass leaves them unchanged (each ran the same session on the same feeds)."""
    import onnxruntime as ort

    model, batches = _minilm_graph(minilm_dir)
    original = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [original.run(None, feeds)[0] for feeds in batches[HELD_OUT]]


def test_int8_mix_returns_the_least_quantizable_matmuls_to_float_until_the_check_holds(
    minilm_dir,
):
    from embedserve.models.static_int8 import (
        Int8Search,
        channel_stats,
        check_texts,
        outlier_channels,
        pooled_vectors,
        quantized_inputs,
        smooth_outlier_channels,
    )

    model, batches = _minilm_graph(minilm_dir)
    batches = batches[::4]
    smooth_outlier_channels(model, batches, [])
    readers = quantized_inputs(model, [])
    stats = channel_stats(model, sorted(readers), batches)
    _, check = _minilm_graph(minilm_dir, check_texts(16, 64, 32))
    reference = pooled_vectors(model, check)

    # One search for the three (choose_int8_mix is one search's `choose`): they share the float
    # graph's vectors and the all-int8 and all-split attempts; each claim is checked below.
    search = Int8Search(model, stats, check)
    loose = search.choose(min_cosine=0.9)
    # Just above what all-int8 reaches: splitting outlier channels off must get there alone.
    middle = search.choose(min_cosine=loose.check_min_cosine + 0.001)
    strict = search.choose(min_cosine=0.999)
    assert loose.keep_float == [] and loose.split == {} and loose.quantized == 36
    assert middle.split and middle.keep_float == [] and middle.quantized == 36
    assert 0 < len(strict.keep_float) < 36
    for choice in (loose, middle, strict):  # what each claims is what its graph does
        got = (pooled_vectors(choice.model, check) * reference).sum(axis=1).min()
        assert abs(got - choice.check_min_cosine) < 1e-6
        assert _float_matmuls(choice.model.graph) >= set(choice.keep_float)
    assert strict.check_min_cosine >= 0.999 > loose.check_min_cosine
    assert middle.check_min_cosine >= loose.check_min_cosine + 0.001
    # Outliers are split off the widest-crested inputs first, and whole inputs go back to float
    # in order of their crest without outliers.
    crest = {t: stats[t].tensor().crest for t in readers}
    assert min(crest[t] for t in middle.split) >= max(
        crest[t] for t in readers if t not in middle.split and outlier_channels(stats[t].peaks).size
    )
    trimmed = {t: stats[t].tensor(outlier_channels(stats[t].peaks)).crest for t in readers}
    kept = {t for t, nodes in readers.items() if set(nodes) <= set(strict.keep_float)}
    narrowest_kept = min(trimmed[t] for t in kept)
    assert all(trimmed[t] <= narrowest_kept for t in set(readers) - kept)


def test_splitting_outlier_channels_leaves_the_float_graph_unchanged(minilm_dir, float_outputs):
    import onnxruntime as ort
    from embedserve.models.static_int8 import (
        channel_stats,
        int8_input,
        outlier_channels,
        quantized_inputs,
        split_outlier_channels,
    )

    model, batches = _minilm_graph(minilm_dir)
    readers = quantized_inputs(model, [])
    stats = channel_stats(model, sorted(readers), batches[:4])
    channels = {t: outlier_channels(s.peaks) for t, s in stats.items()}
    channels = {t: c for t, c in channels.items() if c.size}
    # MiniLM's post-GELU FFN inputs: one or two channels far above the rest in every layer.
    assert {f"layer.{n}/mlp/gelu" for n in range(3)} <= set(channels)
    assert all(len(c) <= 2 for t, c in channels.items() if t.endswith("gelu"))
    split_outlier_channels(model, channels)
    parts = [n for n in model.graph.node if n.name.endswith(OUTLIER_SUFFIX)]
    assert len(parts) == sum(len(readers[t]) for t in channels)
    assert set(quantized_inputs(model, [])) >= {int8_input(t) for t in channels}
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for feeds, want in zip(batches[HELD_OUT], float_outputs, strict=True):
        got = after.run(None, feeds)[0]
        assert np.allclose(got, want, rtol=1e-4, atol=1e-4)


def test_calibration_corpus_is_held_out_from_the_reference_texts(reference):
    corpus = calibration_texts()
    assert len(corpus) == 256 and len(set(corpus)) == len(corpus)
    assert not set(corpus) & set(reference["texts"])
    assert min(len(t.split()) for t in corpus) >= 8
    check = check_texts()
    assert len(check) == 64 + 768 + 256 and len(set(check)) == len(check)
    assert not set(check) & (set(corpus) | set(reference["texts"]))


def test_int8_cache_key_changes_with_the_recipe(minilm_dir, monkeypatch):
    # A graph built by another recipe must not be reused, even where the version was not bumped.
    from embedserve.models import onnx_for, static_int8

    args = (onnx_for(minilm_dir), minilm_dir / "tokenizer.json", 256, "transformers")
    before = static_int8.static_int8_key(*args)
    monkeypatch.setattr(static_int8, "CHECK_MIN_COSINE", static_int8.CHECK_MIN_COSINE + 0.001)
    assert static_int8.static_int8_key(*args) != before


def test_int8_cache_key_changes_with_every_file_the_tokenizer_is_built_from(minilm_dir, tmp_path):
    # The corpus is calibrated as token ids: a file that changes them must change the key.
    from embedserve.models import onnx_for, static_int8

    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        shutil.copyfile(minilm_dir / name, tmp_path / name)
    args = (onnx_for(minilm_dir), tmp_path / "tokenizer.json", 256, "transformers")
    keys = {static_int8.static_int8_key(*args)}
    (tmp_path / "README.md").write_text("not read by the tokenizer")
    assert static_int8.static_int8_key(*args) in keys
    edits = [
        ("tokenizer_config.json", {"do_lower_case": False}),
        ("sentence_bert_config.json", {"do_lower_case": True}),
        ("config.json", {"tokenizer_class": "XLMRobertaTokenizer"}),
    ]
    for name, change in edits:
        path = tmp_path / name
        config = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**config, **change}))
        key = static_int8.static_int8_key(*args)
        assert key not in keys, name
        keys.add(key)


def test_int8_calibrates_with_the_plan_s_tokenizer_mode(
    minilm_dir, xlmr_tokenizer_dir, monkeypatch
):
    """The calibration and check texts become the ids the served model will see: an
    "as-saved" model's (XLM-R's file gives a trailing space a token of its own; transformers
    5 drops it), and the cached graph is keyed on the mode."""
    from embedserve.kinds import build_graph
    from embedserve.loading import LoadOptions
    from embedserve.models import onnx_for, static_int8, variants
    from embedserve.tokenization import ModelTokenizer

    path, texts = xlmr_tokenizer_dir / "tokenizer.json", ["trailing space ", "two  spaces"]
    ids = {}
    for mode in ("transformers", "as-saved"):
        names = ["input_ids", "attention_mask"]
        (batch,) = static_int8.calibration_batches(path, 64, mode, names, texts)
        got = [
            row[mask == 1].tolist()
            for row, mask in zip(batch["input_ids"], batch["attention_mask"])
        ]
        tokenizer = ModelTokenizer(path, 64, mode)
        want = [
            tokenizer.model_sequence(i, content, truncate=True, direction="right").tolist()
            for i, content in enumerate(tokenizer.content_ids(texts))
        ]
        assert sorted(got) == sorted(want), mode  # the batches are sorted by length
        ids[mode] = sorted(got)
    assert ids["transformers"] != ids["as-saved"]
    graph = onnx_for(minilm_dir)
    keys = {static_int8.static_int8_key(graph, path, 64, m) for m in ("transformers", "as-saved")}
    assert len(keys) == 2
    # The plan's mode reaches the calibration (the build itself is stubbed: 20 s and up).
    calibrated = []

    def recording(source, tokenizer_json, max_length, *mode):
        calibrated.append(mode)
        return source

    monkeypatch.setattr(variants, "static_int8_onnx", recording)
    for mode in ("as-saved", "transformers"):
        build_graph(minilm_dir, LoadOptions(precision="int8", tokenizer_mode=mode))
    assert calibrated == [("as-saved",), ("transformers",)]


def test_precision_arguments_and_the_quantize_alias():
    assert resolve_precision(None, None).name == "fp32"
    assert resolve_precision(None, "int8").name == "int8"
    assert resolve_precision("INT8", "int8").name == "int8"
    with pytest.raises(ValueError, match="contradicts"):
        resolve_precision("bf16", "int8")
    with pytest.raises(
        ValueError,
        match=re.escape(f"precision must be one of {[*sorted(PRECISIONS), 'auto']}, got 'fp8'"),
    ):
        resolve_precision("fp8", None)
    with pytest.raises(ValueError, match="quantize must be one of"):
        resolve_precision(None, "int4")


def test_runtime_must_suit_the_precision(minilm_dir):
    with pytest.raises(
        ValueError, match="precision 'bf16' runs on \\('openvino',\\), not on 'onnxruntime'"
    ):
        Engine.from_pretrained(minilm_dir, precision="bf16", runtime="onnxruntime")
    with pytest.raises(ValueError, match="runtime must be one of"):
        Engine.from_pretrained(minilm_dir, runtime="tensorrt")


def test_quantize_alias_loads_the_int8_graph(engines, minilm_dir):
    by_alias = Engine.from_pretrained(minilm_dir, quantize="int8", runtime="onnxruntime")
    assert by_alias.model_info.precision == "int8"
    assert by_alias.session.path == engines("all-MiniLM-L6-v2", "int8", "onnxruntime").session.path


def test_cli_precision_flag(engines):
    texts = ["a first sentence", "and a second one"]
    command = [
        sys.executable,
        "-m",
        "embedserve.cli",
        "embed",
        "--precision",
        "int8",
        "--runtime",
        "onnxruntime",
        *texts,
    ]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    vectors = np.asarray(json.loads(done.stdout), dtype=np.float32)
    expected = engines("all-MiniLM-L6-v2", "int8", "onnxruntime").embed(texts).embeddings
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    bad = subprocess.run(
        [sys.executable, "-m", "embedserve.cli", "embed", "--precision", "fp8", "x"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "invalid choice: 'fp8'" in bad.stderr


def test_smoothing_outlier_channels_leaves_the_float_graph_unchanged(minilm_dir, float_outputs):
    import onnxruntime as ort
    from embedserve.models import onnx_for
    from embedserve.models.static_int8 import smooth_outlier_channels

    model, batches = _minilm_graph(minilm_dir)
    smoothed = smooth_outlier_channels(model, batches[:4], sensitive_nodes(onnx_for(minilm_dir)))
    # Two LayerNorm outputs per layer feed quantized MatMuls (Q/K/V, FFN up); the last layer is
    # kept in float, so 2 x 5 for MiniLM-L6.
    assert smoothed == 10
    assert sum(n.op_type == "Mul" and n.name.endswith("/smoothing") for n in model.graph.node) == 10
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for feeds, want in zip(batches[HELD_OUT], float_outputs, strict=True):
        got = after.run(None, feeds)[0]
        assert np.allclose(got, want, rtol=1e-4, atol=1e-4)
