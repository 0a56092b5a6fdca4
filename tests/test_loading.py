"""One loader for every kind of model: LoadOptions validated once, the same plan for an embedder
and a cross-encoder, and every session (the GPU's IOBinding one too) opened by `open_backend`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
from embedserve.engine import Engine
from embedserve.loading import LoadOptions, LoadPlan, LoadSettings, choose_precision, plan_load
from embedserve.models.graph import onnx_for
from embedserve.precision import CUDA_BOUND, get_precision
from embedserve.reranker import Reranker
from embedserve.runtime import providers as providers_module
from embedserve.runtime.backends import open_backend, open_classifier
from embedserve.runtime.classifier import ClassifierSession
from embedserve.runtime.cuda import BoundEncoderSession
from embedserve.runtime.providers import CPU, CUDA
from embedserve.runtime.session import EncoderSession, SessionOptions
from embedserve.server.config import ServerConfig

from .support.cross_encoders import bert_cross_encoder

FP32 = get_precision("fp32")


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory, minilm_dir) -> Path:
    return bert_cross_encoder(tmp_path_factory.mktemp("loading") / "bert", minilm_dir)


def test_options_are_checked_and_normalized_when_made():
    assert LoadOptions(quantize="int8").precision == "int8"
    assert LoadOptions(precision="FP16", runtime="OpenVINO").precision == "fp16"
    assert LoadOptions(runtime="OpenVINO").runtime == "openvino"
    assert LoadOptions(providers=["cuda", "cpu"]).providers == ("cuda", "cpu")
    assert LoadOptions().precision is None  # left to the kind and the machine
    with pytest.raises(ValueError, match="contradicts"):
        LoadOptions(precision="bf16", quantize="int8")
    with pytest.raises(ValueError, match="precision must be one of"):
        LoadOptions(precision="fp8")
    with pytest.raises(ValueError, match="runtime must be one of"):
        LoadOptions(runtime="tensorrt")
    for name in ("max_batch_tokens", "intra_op_threads", "inter_op_threads", "max_length"):
        with pytest.raises(ValueError, match=f"{name} must be a positive integer or None, got 0"):
            LoadOptions(**{name: 0})
    with pytest.raises(ValueError, match="providers must be a name or a list of names"):
        LoadOptions(providers=[])
    # replace() makes a new one: it is checked again.
    with pytest.raises(ValueError, match="runtime must be one of"):
        replace(LoadOptions(), runtime="tvm")


@pytest.mark.parametrize("name", ["intra_op_threads", "inter_op_threads"])
def test_more_model_threads_than_the_cpus_can_take_is_refused_when_made(name):
    """intra_op_threads=100000 started 100,000 spinning ONNX Runtime threads and never
    returned; refused where the options are made, before any model loads."""
    from embedserve.cpu import max_model_threads

    most = max_model_threads()
    with pytest.raises(ValueError, match=f"{name} must be at most {most} .*, got 100000"):
        LoadOptions(**{name: 100_000})
    assert getattr(LoadOptions(**{name: most}), name) == most


def test_providers_are_stripped_and_may_be_listed_with_commas():
    """The flag's NAMES: `--providers cuda,cpu` was one provider named 'cuda,cpu', and ' cpu'
    (a space from an env file) or 'AUTO' were unknown providers."""
    assert LoadOptions(providers="cuda, cpu").providers == ("cuda", "cpu")
    assert LoadOptions(providers=" cpu ").providers == "cpu"
    assert LoadOptions(providers="AUTO").providers == "auto"
    assert LoadOptions(providers=[" cuda", "cpu"]).providers == ("cuda", "cpu")
    for bad in ("", " ", "cpu,", [], ["cpu", ""]):
        with pytest.raises(ValueError, match="providers must be a name or a list of names"):
            LoadOptions(providers=bad)


def test_providers_are_checked_by_name_and_a_gpu_one_needs_a_device(minilm_dir, monkeypatch):
    """Names are ONNX Runtime's in any case, or cpu/cuda/gpu; an unknown one names the choices,
    and a GPU provider where no device is present is refused while planning, before any graph is
    built: ONNX Runtime fell back to the CPU on its own, which then ran the GPU's fp16 graph."""
    import onnxruntime as ort
    from embedserve.runtime.providers import resolve_providers

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(providers_module, "cuda_device_present", lambda: False)
    assert resolve_providers(["cpuexecutionprovider"]) == [CPU]
    with pytest.raises(ValueError, match=r"providers: \['tpu'\] not known here; use auto, cpu"):
        resolve_providers("tpu")
    for asked in ("cuda", "GPU", ("cpu", "cuda")):
        with pytest.raises(ValueError, match=r"asked for, but this machine has no CUDA device"):
            plan_load(minilm_dir, LoadOptions(providers=asked), Engine.runs)
    assert plan_load(minilm_dir, LoadOptions(providers="auto"), Engine.runs).runtime != CUDA_BOUND
    # Choosing a precision plans for the providers' machine, perhaps another: an embed-file
    # driver with no GPU records the fp16 its Ray GPU actors will run.
    assert choose_precision(LoadOptions(precision="auto", providers="cuda"), Engine.runs).name == (
        "fp16"
    )
    monkeypatch.setattr(providers_module, "cuda_device_present", lambda: True)
    assert resolve_providers("gpu") == [CUDA, CPU]


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("EMBEDSERVE_ORT_LOG_LEVEL", "abc", "expected one of 0 (verbose), 1 (info)"),
        ("EMBEDSERVE_ORT_LOG_LEVEL", "9", "expected one of 0 (verbose), 1 (info)"),
        ("EMBEDSERVE_ORT_LOG_LEVEL", "-1", "expected one of 0 (verbose), 1 (info)"),
        ("EMBEDSERVE_ATTENTION_KERNEL", "fast", "expected one of embedserve, onnxruntime"),
    ],
)
def test_a_bad_session_variable_is_named_while_planning(
    minilm_dir, monkeypatch, variable, value, says
):
    """EMBEDSERVE_ORT_LOG_LEVEL=abc failed with "invalid literal for int() with base 10: 'abc'",
    and 9 with ONNX Runtime's "Invalid session log severity level", when the session opened:
    after the graph was built. Now planning names the variable first."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=re.escape(f"{variable}={value!r}: {says}")):
        plan_load(minilm_dir, LoadOptions(providers="cpu"), Engine.runs)
    monkeypatch.setenv(variable, "")  # empty is unset: the default
    assert plan_load(minilm_dir, LoadOptions(providers="cpu"), Engine.runs).runtime


def test_an_idle_spin_onnx_runtime_would_ignore_is_refused():
    """idle_spin_us=2**31 was taken, and ONNX Runtime, which reads a 32-bit int, kept its own
    spin with a warning at a level embedserve does not log: what was asked was silently dropped."""
    from embedserve.loading import MAX_IDLE_SPIN_US

    assert MAX_IDLE_SPIN_US == 2**31 - 1
    with pytest.raises(
        ValueError, match=r"idle_spin_us must be at most 2147483647 .*, got 2147483648"
    ):
        LoadOptions(idle_spin_us=2**31)
    assert LoadOptions(idle_spin_us=MAX_IDLE_SPIN_US).idle_spin_us == MAX_IDLE_SPIN_US


def test_a_batch_budget_past_the_most_that_is_useful_is_refused():
    """max_batch_tokens=10**9 was taken, and one call of 1,500 texts ran as one batch that grew
    to 7.8 GB resident. A budget past MAX_BATCH_TOKENS (16 x the GPU default) is refused where
    the options are made; the most is taken."""
    from embedserve.planning import GPU_MAX_BATCH_TOKENS, MAX_BATCH_TOKENS

    assert MAX_BATCH_TOKENS == 16 * GPU_MAX_BATCH_TOKENS == 262_144
    with pytest.raises(
        ValueError, match=r"max_batch_tokens must be at most 262144 .*, got 1000000000"
    ):
        LoadOptions(max_batch_tokens=10**9)
    assert LoadOptions(max_batch_tokens=MAX_BATCH_TOKENS).max_batch_tokens == MAX_BATCH_TOKENS


@pytest.mark.parametrize("bad", [-1, True, 1.5, "10", None])
def test_cache_bytes_is_an_integer_of_zero_or_more(bad):
    """True was a one-byte cache and 1.5 a cache of a float size; "10" and None failed with a
    TypeError from a comparison."""
    with pytest.raises(ValueError, match=f"cache_bytes must be an integer >= 0, got {bad!r}"):
        LoadOptions(cache_bytes=bad)
    assert LoadOptions(cache_bytes=0).cache_bytes == 0


def test_options_of_a_server_config_take_its_settings_only():
    config = ServerConfig(
        providers="cpu", intra_op_threads=2, max_batch_tokens=512, quantize="int8", compile=True
    )
    options = LoadOptions.of(config, name="mini")
    settings = [f.name for f in fields(LoadSettings)]
    assert {s: getattr(options, s) for s in settings} == {s: getattr(config, s) for s in settings}
    assert (options.precision, options.name, options.tokenizer) == ("int8", "mini", None)
    assert LoadOptions.of(options, max_length=64) == replace(options, max_length=64)
    with pytest.raises(TypeError, match=r"unknown load option\(s\) \['threads'\]"):
        LoadOptions.of(None, threads=2)


def test_keywords_and_options_load_the_same_model(minilm_dir, cross_encoder_dir):
    by_keywords = Engine.from_pretrained(minilm_dir, providers="cpu", max_batch_tokens=300)
    by_options = Engine.from_pretrained(
        minilm_dir, options=LoadOptions(providers="cpu", max_batch_tokens=300)
    )
    assert by_keywords.model_info == by_options.model_info
    assert by_keywords.max_batch_tokens == by_options.max_batch_tokens == 300
    texts = ["a first sentence", "and a second one"]
    np.testing.assert_array_equal(
        by_keywords.embed(texts).embeddings, by_options.embed(texts).embeddings
    )
    # Keywords change the options they are given.
    reranker = Reranker.from_pretrained(
        cross_encoder_dir, options=LoadOptions(name="ce", max_length=64), max_batch_tokens=128
    )
    assert (reranker.model_info.name, reranker.model_info.max_tokens) == ("ce", 64)
    assert reranker.max_batch_tokens == 128


def test_each_kind_refuses_what_it_does_not_run(cross_encoder_dir):
    with pytest.raises(
        ValueError, match="cross-encoders run fp32 or int8 on onnxruntime, not 'bf16' on None"
    ):
        Reranker.from_pretrained(cross_encoder_dir, precision="bf16")
    with pytest.raises(ValueError, match="not 'fp32' on 'openvino'"):
        Reranker.from_pretrained(cross_encoder_dir, runtime="openvino")
    # "auto" among the one runtime a cross-encoder runs on, with the CPU budget of its precision.
    reranker = Reranker.from_pretrained(cross_encoder_dir, runtime="auto", providers="cpu")
    assert type(reranker.session) is ClassifierSession
    assert reranker.max_batch_tokens == FP32.cpu_batch_tokens


def test_max_length_past_the_model_s_positions_is_refused_when_it_loads(
    minilm_dir, cross_encoder_dir
):
    """It loaded, and every text past 512 tokens then failed inside ONNX Runtime ("Attempting to
    broadcast an axis by a dimension other than 1. 512 by 802")."""
    with pytest.raises(ValueError, match="max_length must be at most 512.*got 513"):
        Engine.from_pretrained(minilm_dir, providers="cpu", max_length=513)
    positions = json.loads((cross_encoder_dir / "config.json").read_text())
    positions = positions["max_position_embeddings"]
    with pytest.raises(ValueError, match=f"max_length must be at most {positions}"):
        Reranker.from_pretrained(cross_encoder_dir, max_length=positions + 1)
    assert Engine.from_pretrained(minilm_dir, max_length=512).model_info.max_tokens == 512


def test_max_length_cuts_an_embedders_inputs(minilm_dir):
    engine = Engine.from_pretrained(minilm_dir, providers="cpu")
    cut = Engine.from_pretrained(minilm_dir, providers="cpu", max_length=32)
    assert cut.model_info.max_tokens == 32
    text = "a long text " * 40
    sequence = cut.prepare([text]).sequences[0]
    assert len(sequence) == 32
    # The cut model's vector is the full model's for the same 30 content tokens.
    np.testing.assert_allclose(
        cut.embed([text]).embeddings,
        engine.embed([sequence[1:-1].tolist()]).embeddings,
        atol=1e-6,
    )


def test_the_runtime_opens_every_session(minilm_dir, cross_encoder_dir):
    cpu = SessionOptions("cpu")
    plain = open_backend(onnx_for(minilm_dir), FP32, "onnxruntime", cpu)
    assert type(plain) is EncoderSession
    # The CUDA path's IOBinding session; with the CPU provider it runs here, shapes bucketed.
    pooled = onnx_for(minilm_dir, pooling="mean")
    bound = open_backend(pooled, FP32, CUDA_BOUND, cpu, max_sequence=256)
    assert type(bound) is BoundEncoderSession and bound.pooled and bound.max_sequence == 256
    classifier = open_classifier(onnx_for(cross_encoder_dir), "onnxruntime", cpu)
    assert type(classifier) is ClassifierSession and classifier.num_labels == 1
    with pytest.raises(ValueError, match="a classifier's graph runs on onnxruntime, not on"):
        open_classifier(onnx_for(cross_encoder_dir), CUDA_BOUND, cpu)


def test_an_engine_planned_for_cuda_loads_the_pooled_bound_path(minilm_dir):
    """What `plan_load` gives on a GPU, run with the CPU provider: the pooling graph in the
    IOBinding session, and the same vectors as the plain path."""
    options = LoadOptions(providers="cpu")
    plan = LoadPlan(minilm_dir, minilm_dir, "mini", FP32, CUDA_BOUND, options)
    bound = Engine.from_plan(plan)
    assert type(bound.session) is BoundEncoderSession and bound.session.pooled
    assert bound.session.max_sequence == bound.model_info.max_tokens == 256
    plain = Engine.from_pretrained(minilm_dir, options=options)
    texts = ["a first sentence", "and a much longer second one, " * 5]
    np.testing.assert_allclose(
        bound.embed(texts).embeddings, plain.embed(texts).embeddings, atol=1e-5
    )


def test_a_precision_cuda_cannot_run_is_refused_there(minilm_dir, monkeypatch):
    """bf16 is OpenVINO's, which runs on the CPU: asked for on CUDA it is refused, not run as
    fp32 under bf16's name."""
    import onnxruntime as ort

    # An onnxruntime that offers CUDA, and a device: planning opens nothing on it.
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(providers_module, "cuda_device_present", lambda: True)
    with pytest.raises(ValueError, match="precision 'bf16' runs on openvino, not on CUDA"):
        plan_load(minilm_dir, LoadOptions(precision="bf16", providers="cuda"), Engine.runs)
    planned = plan_load(minilm_dir, LoadOptions(precision="fp32", providers="cuda"), Engine.runs)
    assert (planned.precision.name, planned.runtime) == ("fp32", CUDA_BOUND)


def test_the_package_exports_both_kinds_without_loading_onnxruntime():
    code = (
        "import sys, embedserve\n"
        "from embedserve.cli import _parser\n"
        "_parser()\n"
        "assert 'onnxruntime' not in sys.modules, 'the CLI parser loaded onnxruntime'\n"
        "from embedserve import Engine, LoadOptions, Reranker\n"
        "from embedserve.engine import Engine as E\n"
        "from embedserve.reranker import Reranker as R\n"
        "assert (Engine, Reranker) == (E, R) and LoadOptions().compile is False\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
