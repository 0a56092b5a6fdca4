"""precision="auto": int8 only on a CPU whose int8 GEMM measures clearly faster than its fp32 one
(runtime/int8_speed.py, measured once per CPU and kept in the user cache), else fp32; opt-in (the
default stays fp32), and what it chose is what `model_info`, /info and an embed-file manifest
report."""

from __future__ import annotations

import json
import math

import httpx
import pytest
from embedserve.corpus import EmbedFileOptions
from embedserve.cpu import parse_cpuinfo
from embedserve.engine import Engine
from embedserve.loading import LoadOptions, Runs, choose_precision, plan_load
from embedserve.precision import (
    INT8_MIN_SPEEDUP,
    auto_precision,
    get_precision,
    this_cpus_precision,
)
from embedserve.runtime import int8_speed

from .server.conftest import live_server

# GEMM speedups measured with `int8_speed.measure_int8_speedup`'s shapes: a Sapphire Rapids Xeon
# (VNNI) ~4.8x and a Zen 3 EPYC (AVX2, no VNNI) ~2.0x, where the engine ran int8 1.84x and
# 1.36-1.56x fp32; an AVX2 Intel core without VNNI multiplies int8 at about its fp32 rate (a
# Broadwell's engine ran 0.97x).
SAPPHIRE_RAPIDS, ZEN_3, BROADWELL = 4.8, 2.0, 1.05


def test_the_rule_on_each_kind_of_cpu():
    assert auto_precision(SAPPHIRE_RAPIDS) == "int8"
    assert auto_precision(ZEN_3) == "int8"
    assert auto_precision(BROADWELL) == "fp32"
    assert auto_precision(INT8_MIN_SPEEDUP) == "int8"
    # A kind of model without an int8 precision runs fp32 on any CPU, and measures nothing.
    assert auto_precision(SAPPHIRE_RAPIDS, allowed=("fp32",)) == "fp32"
    assert this_cpus_precision(allowed=("fp32",)) == "fp32"


def test_the_speedup_is_measured_once_per_cpu_and_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDSERVE_CACHE", str(tmp_path))
    int8_speed.int8_speedup.cache_clear()
    try:
        measured = int8_speed.int8_speedup()  # ONNX Runtime's real GEMMs on this CPU
        assert math.isfinite(measured) and 0.1 < measured < 100
        (kept,) = (tmp_path / "cpu").glob("int8-speedup-*.json")
        assert json.loads(kept.read_text())["speedup"] == measured

        def measure_again() -> float:
            raise AssertionError("measured again with an answer in the cache")

        monkeypatch.setattr(int8_speed, "measure_int8_speedup", measure_again)
        int8_speed.int8_speedup.cache_clear()  # a new process: reads the file
        assert int8_speed.int8_speedup() == measured
        assert this_cpus_precision() == auto_precision(measured)

        kept.write_text("{not json")  # a damaged file is measured again, not trusted
        monkeypatch.setattr(int8_speed, "measure_int8_speedup", lambda: 3.0)
        int8_speed.int8_speedup.cache_clear()
        assert int8_speed.int8_speedup() == 3.0
        assert json.loads(kept.read_text())["speedup"] == 3.0
    finally:
        int8_speed.int8_speedup.cache_clear()


def test_cpuinfo_is_read_for_the_cache_key():
    model, flags = parse_cpuinfo(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
        "flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni\n"
    )
    assert model == "Intel(R) Xeon(R) Platinum 8480+" and "avx512_vnni" in flags
    assert parse_cpuinfo("processor\t: 0\nFeatures\t: fp asimd asimddp\n")[1] == {
        "fp",
        "asimd",
        "asimddp",
    }


def test_auto_is_opt_in_and_stays_auto_until_planned():
    assert LoadOptions().precision is None  # the default: fp32 on a CPU
    assert LoadOptions(precision="AUTO").precision == "auto"
    with pytest.raises(ValueError, match="contradicts precision='auto'"):
        LoadOptions(precision="auto", quantize="int8")
    assert get_precision("auto").name == this_cpus_precision()


def test_a_plan_resolves_auto_within_what_the_kind_runs(minilm_dir):
    options = LoadOptions(precision="auto", providers="cpu")
    embedder = plan_load(minilm_dir, options, Runs("embedders", cuda_precision="fp16"))
    assert embedder.precision.name == this_cpus_precision()
    fp32_only = plan_load(minilm_dir, options, Runs("sparse encoders", precisions=("fp32",)))
    assert fp32_only.precision.name == "fp32"


def test_auto_is_the_gpu_s_default_only_where_the_model_runs_on_the_gpu(monkeypatch):
    from embedserve.runtime import providers

    monkeypatch.setattr(providers, "cuda_device_present", lambda: True)
    assert choose_precision(LoadOptions(precision="auto"), Engine.runs).name == "fp16"
    # OpenVINO runs on the CPU, GPU or not: this CPU's rule.
    on_openvino = LoadOptions(precision="auto", runtime="openvino")
    assert choose_precision(on_openvino, Engine.runs).name == this_cpus_precision()


def test_embed_file_records_the_precision_auto_chose():
    options = EmbedFileOptions(load=LoadOptions(precision="auto"))
    assert options.fingerprint([])["precision"] == this_cpus_precision()


def test_info_reports_the_precision_auto_chose(minilm_dir):
    engine = Engine.from_pretrained(minilm_dir, precision="auto", providers="cpu")
    chosen = this_cpus_precision()
    assert engine.model_info.precision == chosen
    with live_server(engines={"all-MiniLM-L6-v2": engine}) as server:
        info = httpx.get(server.url + "/info", timeout=30).json()
    assert info["model_dtype"] == {"int8": "int8", "fp32": "float32"}[chosen]
