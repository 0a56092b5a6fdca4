"""The wheel a user installs: built by tools/build_wheel.sh, repaired to a manylinux tag no newer
than manylinux_2_28, checked by twine, and installed into a fresh venv where no compiler can be
found; there `embedserve serve` answers /v1/embeddings and `Engine.embed` gives the vectors the
checkout's engine gives.

The fresh venv gets the wheel and only the wheel: its dependencies (onnxruntime, tokenizers, ...
hundreds of MB) are read from this test environment's site-packages through a `.pth` line placed
*after* the venv's own folder, so `import embedserve` finds the installed wheel, and a check below
holds the wheel's declared requirements to what that environment has.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from importlib.metadata import Distribution
from pathlib import Path

import httpx
import numpy as np
import pytest

from ..support import FP32_COSINE, cosines, free_port

ROOT = Path(__file__).resolve().parents[2]
MODEL = "all-MiniLM-L6-v2"
TEXTS = ["a wheel that installs without a compiler", "ünïcode and 中文"]
# The newest glibc a manylinux_2_28 wheel may ask for.
GLIBC_MAX = (2, 28)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        ["bash", str(ROOT / "tools" / "build_wheel.sh"), str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-6000:]
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    (found,) = dist.glob("embedserve-*.whl")
    return found


def test_sdist_and_a_manylinux_wheel_no_newer_than_2_28(dist: Path, wheel: Path):
    (sdist,) = dist.glob("embedserve-*.tar.gz")
    # pyproject.toml declares Apache-2.0, whose text must travel with the sources.
    with tarfile.open(sdist) as archive:
        [license_file] = [m for m in archive.getmembers() if m.name.endswith("/LICENSE")]
        assert archive.extractfile(license_file).read() == (ROOT / "LICENSE").read_bytes()
    assert "Apache License" in (ROOT / "LICENSE").read_text().split("\n", 3)[1]
    tags = re.findall(r"manylinux_(\d+)_(\d+)_x86_64", wheel.name)
    assert tags, wheel.name
    assert min((int(a), int(b)) for a, b in tags) <= GLIBC_MAX


def test_wheel_holds_the_core_its_stub_and_no_tests(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    assert any(re.fullmatch(r"embedserve/_core\.cpython-.*\.so", name) for name in names), names
    assert {"embedserve/py.typed", "embedserve/_core.pyi", "embedserve/cli.py"} <= set(names)
    assert not [name for name in names if name.split("/")[0] in {"tests", "bench", "docs"}]
    assert not [name for name in names if "/tests/" in name or name.endswith("conftest.py")]


def test_core_asks_for_no_newer_glibc_and_no_libstdcxx(wheel: Path, tmp_path: Path):
    with zipfile.ZipFile(wheel) as archive:
        (core,) = [n for n in archive.namelist() if re.fullmatch(r"embedserve/_core\..*\.so", n)]
        path = Path(archive.extract(core, tmp_path))
    symbols = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", str(wheel)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "GLIBCXX" not in symbols, symbols
    elf = path.read_bytes()
    versions = {tuple(map(int, v)) for v in re.findall(rb"GLIBC_(\d+)\.(\d+)", elf)}
    assert versions and max(versions) <= GLIBC_MAX, sorted(versions)
    assert b"libstdc++" not in elf


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory) -> Path:
    """A fresh venv holding the installed wheel, with no compiler to be found."""
    folder = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    (site,) = folder.glob("lib/python*/site-packages")
    # After the venv's own site-packages on sys.path: the dependencies, never embedserve itself.
    dependencies = [path for path in sys.path if path.endswith("site-packages")]
    (site / "zz_dependencies.pth").write_text("\n".join(dependencies) + "\n")
    env = _no_compiler(folder)
    compilers = ("cc", "gcc", "c++", "g++", "clang", "cmake", "zig")
    assert not [name for name in compilers if shutil.which(name, path=env["PATH"])]
    subprocess.run(
        [str(folder / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index"]
        + ["--only-binary", "embedserve", "--ignore-installed", str(wheel)],
        check=True,
        env=env,
        capture_output=True,
    )
    return folder


def _no_compiler(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "CMAKE_ARGS"}}
    env["CC"] = env["CXX"] = "/nonexistent/cc"
    env["PATH"] = str(venv / "bin")
    return env


def _run(venv: Path, code: str) -> str:
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        env=_no_compiler(venv),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_installed_wheel_is_what_runs_and_its_requirements_are_met(venv: Path):
    found = json.loads(
        _run(
            venv,
            "import json, embedserve, embedserve._core as core; "
            "print(json.dumps([embedserve.__file__, core.__file__, embedserve.__version__]))",
        )
    )
    assert all(path.startswith(str(venv)) for path in found[:2]), found
    from packaging.requirements import Requirement
    from packaging.version import Version

    (metadata,) = venv.glob("lib/python*/site-packages/embedserve-*.dist-info")
    distribution = Distribution.at(metadata)
    assert distribution.version == found[2]
    for line in distribution.requires or []:
        requirement = Requirement(line)
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        have = _run(
            venv,
            f"import importlib.metadata as m; print(m.version({requirement.name!r}))",
        ).strip()
        assert requirement.specifier.contains(Version(have), prereleases=True), (line, have)


def test_installed_wheel_embeds_as_the_checkout_does(venv: Path):
    from embedserve.engine import Engine

    expected = Engine.from_pretrained(MODEL).embed(TEXTS).embeddings
    code = (
        "import json; from embedserve import Engine; "
        f"print(json.dumps(Engine.from_pretrained({MODEL!r}).embed({TEXTS!r}).embeddings.tolist()))"
    )
    vectors = np.asarray(json.loads(_run(venv, code)), dtype=np.float32)
    assert cosines(vectors, expected).min() >= FP32_COSINE


def test_installed_wheels_kernels_pick_the_instruction_set_the_checkouts_do(venv: Path):
    # The wheel's compiler (zig's clang) once dispatched from a runtime library that reported no
    # AVX at all, so the wheel ran its slowest kernels on every CPU; the checkout's own pick is
    # held to /proc/cpuinfo in tests/runtime/test_kernel_isa.py.
    from embedserve.runtime.custom_ops import kernel_isa

    code = "from embedserve.runtime.custom_ops import kernel_isa; print(kernel_isa())"
    assert _run(venv, code).strip() == kernel_isa()


@pytest.fixture
def served(venv: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(venv / "bin" / "embedserve"), "serve", "--port", str(port)],
            env=_no_compiler(venv),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 300
        url = f"http://127.0.0.1:{port}"
        while True:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            try:
                if httpx.get(url + "/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_installed_wheel_serves(served: str):
    from embedserve.engine import Engine

    response = httpx.post(served + "/v1/embeddings", json={"model": MODEL, "input": TEXTS})
    assert response.status_code == 200, response.text
    vectors = np.asarray([row["embedding"] for row in response.json()["data"]], np.float32)
    expected = Engine.from_pretrained(MODEL).embed(TEXTS).embeddings
    assert cosines(vectors, expected).min() >= FP32_COSINE
