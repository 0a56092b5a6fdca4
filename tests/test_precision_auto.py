"""precision="auto": int8 only on a CPU whose int8 is faster than its fp32 (VNNI), else fp32;
opt-in (the default stays fp32), and what it chose is what `model_info`, /info and an
embed-file manifest report."""

from __future__ import annotations

import httpx
import pytest
from embedserve.corpus import EmbedFileOptions
from embedserve.cpu import cpu_flags, parse_cpuinfo
from embedserve.engine import Engine
from embedserve.loading import LoadOptions, Runs, plan_load
from embedserve.precision import auto_precision, get_precision

from .server.conftest import live_server

# Trimmed /proc/cpuinfo of two real machines: a Sapphire Rapids Xeon (VNNI, where int8 measured
# faster than fp32) and a Broadwell Xeon (AVX2 only, where it measured 0.97x fp32).
VNNI_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx_vnni amx_int8 amx_bf16
"""
AVX2_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz
flags\t\t: fpu sse2 avx avx2 fma
"""
ARM_CPUINFO = """processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 asimddp
"""


def test_the_rule_on_each_kind_of_cpu():
    model, flags = parse_cpuinfo(VNNI_CPUINFO)
    assert model == "Intel(R) Xeon(R) Platinum 8480+" and "avx512_vnni" in flags
    assert auto_precision(flags) == "int8"
    assert auto_precision({"avx2", "avx_vnni"}) == "int8"  # VNNI in AVX (Alder Lake, Zen 5)
    assert auto_precision(parse_cpuinfo(AVX2_CPUINFO)[1]) == "fp32"
    assert auto_precision(parse_cpuinfo(ARM_CPUINFO)[1]) == "fp32"  # unmeasured there
    # A kind of model without an int8 precision runs fp32 on any CPU.
    assert auto_precision(flags, allowed=("fp32",)) == "fp32"


def test_auto_is_opt_in_and_stays_auto_until_planned():
    assert LoadOptions().precision is None  # the default: fp32 on a CPU
    assert LoadOptions(precision="AUTO").precision == "auto"
    with pytest.raises(ValueError, match="contradicts precision='auto'"):
        LoadOptions(precision="auto", quantize="int8")
    assert get_precision("auto").name == auto_precision(cpu_flags())


def test_a_plan_resolves_auto_within_what_the_kind_runs(minilm_dir):
    options = LoadOptions(precision="auto", providers="cpu")
    embedder = plan_load(minilm_dir, options, Runs("embedders", cuda_precision="fp16"))
    assert embedder.precision.name == auto_precision(cpu_flags())
    fp32_only = plan_load(minilm_dir, options, Runs("sparse encoders", precisions=("fp32",)))
    assert fp32_only.precision.name == "fp32"


def test_embed_file_records_the_precision_auto_chose():
    options = EmbedFileOptions(load=LoadOptions(precision="auto"))
    assert options.fingerprint([])["precision"] == auto_precision(cpu_flags())


def test_info_reports_the_precision_auto_chose(minilm_dir):
    engine = Engine.from_pretrained(minilm_dir, precision="auto", providers="cpu")
    chosen = auto_precision(cpu_flags())
    assert engine.model_info.precision == chosen
    with live_server(engines={"all-MiniLM-L6-v2": engine}) as server:
        info = httpx.get(server.url + "/info", timeout=30).json()
    assert info["model_dtype"] == {"int8": "int8", "fp32": "float32"}[chosen]
