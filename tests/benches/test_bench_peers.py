"""`python -m bench peers`: the ratios issue #10 asks for, and how the peers' venv is found.

The peers themselves need their own venv (bench/peers-requirements.txt), which the test
environment cannot hold; these tests cover the parts that decide what is compared with what.
"""

from __future__ import annotations

import pytest

from bench import bench_peers, peers_env
from bench.peers_st import int8_config

from . import run_bench


def _row(runner: str, texts_per_s: float, min_cos: float) -> dict:
    return {"runner": runner, "texts_per_s": texts_per_s, "min_cos": min_cos, "mean_cos": min_cos}


ROWS = {
    r["runner"]: r
    for r in (
        _row("st-torch", 90.0, 1.0),
        _row("st-onnx", 150.0, 1.0),
        # OpenVINO's default with real bf16: fast but not exact, so not the exact peer.
        _row("st-openvino", 330.0, 0.99997),
        _row("st-onnx-int8", 270.0, 0.97),
        _row("st-openvino-int8", 400.0, 0.985),
        _row("embedserve-fp32", 300.0, 1.0),
        _row("embedserve-fp32-openvino", 240.0, 1.0),
        _row("embedserve-bf16", 420.0, 0.99998),
        _row("embedserve-int8", 500.0, 0.98),
        _row("embedserve-int8-openvino", 450.0, 0.99),
    )
}


def test_baselines_pick_the_exact_peer_by_measured_fidelity():
    bases = bench_peers._baselines(ROWS)
    assert bases["best exact peer"]["runner"] == "st-onnx"
    assert bases["OpenVINO default"]["runner"] == "st-openvino"
    assert bases["best int8 peer"]["runner"] == "st-openvino-int8"
    # Without bf16 in the CPU, OpenVINO's default runs f32 and is the fastest exact peer.
    exact_ov = dict(ROWS, **{"st-openvino": _row("st-openvino", 330.0, 1.0)})
    assert bench_peers._baselines(exact_ov)["best exact peer"]["runner"] == "st-openvino"


def test_goals_print_each_ratio_with_its_fidelity_check(capsys):
    bench_peers.print_goals(ROWS)
    out = capsys.readouterr().out
    assert "fp32: embedserve-fp32 / st-onnx = 2.00x (goal >= 1.5x: met)" in out
    assert "bf16: embedserve-bf16 / st-openvino = 1.27x (goal >= 1.2x: met)" in out
    # The fastest int8 runner is compared, and its min cos below 0.985 is called out.
    assert "int8: embedserve-int8 / st-openvino-int8 = 1.25x (goal >= 1.5x: missed)" in out
    assert "min cos 0.980000 vs floor 0.985 (MISSED)" in out


def test_goals_say_what_was_not_measured(capsys):
    ours_only = {k: v for k, v in ROWS.items() if k.startswith("embedserve-")}
    bench_peers.print_goals(ours_only)
    out = capsys.readouterr().out
    assert out.count("not measured") == 3


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu avx avx2 fma", "avx2"),
        ("avx2 avx512f avx512bw", "avx512"),
        ("avx2 avx512f avx512_vnni avx512_bf16", "avx512_vnni"),
    ],
)
def test_int8_config_follows_the_cpu_flags(flags, expected):
    assert int8_config(f"flags\t\t: {flags}\n") == expected


def test_peers_are_skipped_with_the_setup_command_when_their_venv_is_missing(tmp_path, monkeypatch):
    # An empty cache: no peers' venv, so the run names the setup step and measures nothing else.
    monkeypatch.setenv("EMBEDSERVE_CACHE", str(tmp_path))
    assert not peers_env.is_ready()
    done = run_bench("peers", "--runners", "st-onnx", "--rounds", "1", timeout=120)
    assert "python -m bench peers --setup" in done.stdout
    assert "round 1" not in done.stdout
