"""`python -m bench gpu --smoke` runs end to end on the CPU; gpu_setup.sh parts join back."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from . import ROOT, run_bench


def test_gpu_bench_smoke_runs_the_whole_matrix_on_the_cpu():
    done = run_bench("gpu", "--smoke", "--models", "all-MiniLM-L6-v2", "--no-baseline", timeout=240)
    out = done.stdout
    for precision in ("fp32", "fp16"):
        for kind in ("short", "mix"):
            rows = re.findall(
                rf"^{precision}\s+{kind}\s+\d+\s+([\d.]+)\s+(\d+)\s+\d+/\d+/\d+\s+(\S+)",
                out,
                re.MULTILINE,
            )
            assert len(rows) == 2, out
            assert all(float(texts_s) > 0 and int(tokens_s) > 0 for texts_s, tokens_s, _ in rows)
            if precision == "fp16":  # fp16 against fp32 on the same texts
                assert all(float(cos) >= 0.9999 for _, _, cos in rows), out
    assert re.search(r"^\| 2 \| 2 \| base64 \| \d+ \| 0 \|", out, re.MULTILINE), (
        out
    )  # HTTP, no errors
    assert "GPU utilization: n/a" in out


def test_gpu_setup_split_and_join_reproduce_the_file(tmp_path):
    payload = tmp_path / "onnxruntime_gpu-0.0-py3-none-any.whl"
    payload.write_bytes(os.urandom(2_500_000))
    env = {**os.environ, "GPU_SETUP_PART_BYTES": "1000000"}
    script = str(ROOT / "bench" / "gpu_setup.sh")
    subprocess.run(
        ["bash", script, "split", str(payload), str(tmp_path / "parts")],
        env=env,
        check=True,
        timeout=60,
    )
    parts = sorted((tmp_path / "parts").glob("part.*"))
    assert [p.stat().st_size for p in parts] == [1_000_000, 1_000_000, 500_000]
    joined = subprocess.run(
        ["bash", script, "join", str(tmp_path / "parts"), str(tmp_path / "out")],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    result = Path(joined.stdout.strip())
    assert result.name == payload.name
    assert (
        hashlib.sha256(result.read_bytes()).digest()
        == hashlib.sha256(payload.read_bytes()).digest()
    )
    # A damaged part is refused before anything is joined.
    parts[1].write_bytes(b"x" + parts[1].read_bytes()[1:])
    bad = subprocess.run(
        ["bash", script, "join", str(tmp_path / "parts"), str(tmp_path / "again")],
        env=env,
        timeout=60,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0 and not (tmp_path / "again").exists()


def test_embed_command_takes_a_precision():
    texts = ["a GPU runs the float16 graph", "the CPU path stays float32"]
    vectors = {}
    for precision in ("fp32", "fp16"):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "embedserve.cli",
                "embed",
                "--providers",
                "cpu",
                "--precision",
                precision,
                *texts,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        vectors[precision] = np.asarray(json.loads(done.stdout), dtype=np.float64)
    assert vectors["fp16"].shape == (2, 384)
    cos = (vectors["fp16"] * vectors["fp32"]).sum(1)  # both unit length
    assert cos.min() >= 0.9999 and not np.array_equal(vectors["fp16"], vectors["fp32"])
