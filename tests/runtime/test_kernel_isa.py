"""Which instruction set embedserve's custom-op kernels run with (csrc/simd.cpp), and that every
variant the CPU can run gives the answers the op tests hold it to.

The first wave of these kernels dispatched with GCC's `target_clones("arch=haswell")`, which
an AMD CPU never matches, and the wheel's compiler decided from a runtime library that reported
no AVX at all: both ran a 16-float build for SSE2 that GCC splits element by element, ~3x slower
than ONNX Runtime's own kernels. The library now reads CPUID itself."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from embedserve.runtime.custom_ops import kernel_isa, library

pytestmark = pytest.mark.skipif(library() is None, reason="the custom-op library was not built")

ISAS = ("avx512", "avx2", "avx", "baseline")  # best first, as csrc/simd.hpp's Isa
OP_TESTS = [
    Path(__file__).parent / "test_custom_attention.py",
    Path(__file__).parent / "test_custom_epilogues.py",
]


def _isa_from_cpuinfo() -> str:
    """The set Linux says this CPU and kernel can run, from /proc/cpuinfo's flags."""
    flags: set[str] = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if "avx512f" in flags:
        return "avx512"
    if {"avx", "fma"} <= flags:
        return "avx2" if "avx2" in flags else "avx"
    return "baseline"


@pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64",
    reason="reads /proc/cpuinfo's x86 flags",
)
def test_the_cpus_best_set_is_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMBEDSERVE_KERNEL_ISA", raising=False)
    assert _reported_isa(None) == _isa_from_cpuinfo()


def _env(cap: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "EMBEDSERVE_KERNEL_ISA"}
    if cap is not None:
        env["EMBEDSERVE_KERNEL_ISA"] = cap
    return env


def _reported_isa(cap: str | None) -> str:
    code = "from embedserve.runtime.custom_ops import kernel_isa; print(kernel_isa())"
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=_env(cap),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _variants() -> list[str]:
    best = kernel_isa() or "baseline"
    return list(ISAS[ISAS.index(best) :])


@pytest.mark.parametrize("isa", _variants())
def test_every_variant_passes_the_op_tests(isa: str) -> None:
    # A cap never raises the set, so each of these runs the variant it names.
    assert _reported_isa(isa) == isa
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            *map(str, OP_TESTS),
        ],
        check=False,
        env=_env(isa),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
