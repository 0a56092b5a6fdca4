"""embedserve's precisions against sentence-transformers' own fast backends, one process each.

    python -m bench peers --setup          # once: the peers' venv and their exported models
    python -m bench peers --rounds 3 --copies 4 --threads 2

Runners: sentence-transformers with torch, ONNX (fp32 and dynamic int8) and OpenVINO (default
and static int8), as its "Speeding up Inference" docs set them up, and embedserve in each of
its precisions. The texts are the 200 reference texts (tests/data) repeated `--copies` times;
each runner embeds them in its own fresh process, the runners take turns round after round,
and the table shows medians, then issue #10's ratios. Fidelity is min / mean cosine of the first
copy against the fp32 sentence-transformers reference vectors.

The peers run in their own venv (bench/peers_env.py, bench/peers-requirements.txt): their
optimum pins cannot share the test extra's environment. Their models are exported once,
offline, into the cache (`bench-peers/`) by bench/peers_st.py: ONNX and OpenVINO exports,
dynamic int8 with sentence-transformers' own helper, and static int8 with its OpenVINO helper
fed a local dataset. Both static int8 models (the peer's and embedserve's) calibrate on the
same corpus, Python's documentation prose, so the reference texts are held out for everyone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.machine import describe_machine
from bench.peers_st import CALIBRATION_FILE, int8_config

MODEL = "all-MiniLM-L6-v2"
ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "tests" / "data" / f"{MODEL}.public.json"
PEERS = ("st-torch", "st-onnx", "st-openvino", "st-onnx-int8", "st-openvino-int8")
OURS = (
    "embedserve-fp32",
    "embedserve-fp32-openvino",
    "embedserve-bf16",
    "embedserve-int8",
    "embedserve-int8-openvino",
)
# Peers that may count as exact, when their measured min cosine reaches fp32's floor.
EXACT_CANDIDATES = ("st-torch", "st-onnx", "st-openvino")
INT8_PEERS = ("st-onnx-int8", "st-openvino-int8")
# Issue #10: (embedserve precision, the peer it is divided by, the ratio to reach).
GOALS = (
    ("fp32", "best exact peer", 1.5),
    ("bf16", "OpenVINO default", 1.2),
    ("int8", "best int8 peer", 1.5),
)


def _peer_dir() -> Path:
    from bench.peers_env import peers_root

    return peers_root() / MODEL


def prepare(peer_python: Path) -> Path:
    """Export the peers' models into the cache once (minutes); later calls return at once.

    The copy of the model and the calibration texts come from this (the project's) environment;
    the exports run in the peers' one, offline.
    """
    from embedserve.models import resolve_model_dir
    from embedserve.models.static_int8 import calibration_texts

    from bench.peers_env import requirements_digest

    target = _peer_dir()
    done = target / ".prepared"
    if done.exists() and done.read_text() == requirements_digest():
        return target
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(resolve_model_dir(MODEL), target)
    # The corpus embedserve's static int8 calibrates on: the reference texts stay held out.
    (target / CALIBRATION_FILE).write_text(json.dumps({"texts": calibration_texts()}))
    print(f"exporting the peers' models into {target} (once; minutes)", flush=True)
    subprocess.run(
        [str(peer_python), "-m", "bench.peers_st", "export", str(target)],
        check=True,
        env=_peer_env(),
        timeout=3600,
    )
    done.write_text(requirements_digest())
    return target


def _peer_env() -> dict[str, str]:
    """The peers' processes: `bench` importable, and no way to reach a model or dataset hub."""
    return dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
    )


def _encoder(runner: str, threads: int, model_dir: Path | None):
    if runner.startswith("st-"):
        from bench.peers_st import st_encoder

        if model_dir is None:
            raise ValueError(f"{runner} needs --model-dir (the exported peers' folder)")
        return st_encoder(runner, model_dir, threads)
    from embedserve.engine import Engine

    precision = runner.split("-")[1]
    # "-openvino" forces that runtime; otherwise the engine picks ("auto").
    runtime = "openvino" if runner.endswith("-openvino") else None
    engine = Engine.from_pretrained(
        MODEL,
        precision=precision,
        runtime=runtime,
        providers="cpu",
        intra_op_threads=threads,
        inter_op_threads=1,
        cache_bytes=0,  # each round embeds the same texts: they must reach the model
    )
    return lambda texts: engine.embed(texts).embeddings


def worker(runner: str, copies: int, threads: int, model_dir: Path | None = None) -> dict:
    reference = json.loads(REFERENCE.read_text())
    texts = reference["texts"] * copies
    encode = _encoder(runner, threads, model_dir)
    encode(texts[:32])  # warm-up: first-call allocations and kernel selection
    start = time.perf_counter()
    vectors = encode(texts)
    seconds = time.perf_counter() - start
    ref = np.asarray(reference["normalized"], dtype=np.float64)
    ours = vectors[: len(ref)].astype(np.float64)
    cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    return {
        "runner": runner,
        "texts_per_s": len(texts) / seconds,
        "min_cos": float(cos.min()),
        "mean_cos": float(cos.mean()),
    }


def _run_worker(runner: str, copies: int, threads: int, peer_python: Path | None) -> dict | None:
    """One runner in a fresh process: the peers in their venv, embedserve in this interpreter."""
    command = ["--worker", runner, "--copies", str(copies), "--threads", str(threads)]
    if runner.startswith("st-"):
        python, env = str(peer_python), _peer_env()
        command += ["--model-dir", str(_peer_dir())]
    else:
        python, env = sys.executable, dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [python, "-m", "bench", "peers", *command],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        print(
            f"  {runner}: failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}",
            flush=True,
        )
        return None
    return json.loads(lines[-1])


def _peer_runners(runners: list[str], peer_python: Path | None) -> list[str]:
    """The runners that can run: the peers only once their venv and exports exist."""
    if not any(r.startswith("st-") for r in runners):
        return runners
    from bench.peers_env import is_ready

    if peer_python is None and not is_ready():
        print(
            "the sentence-transformers peers need their own venv: run "
            "`python -m bench peers --setup` first (bench/peers-requirements.txt); "
            "measuring embedserve only",
            flush=True,
        )
        return [r for r in runners if not r.startswith("st-")]
    try:
        prepare(peer_python or _default_peer_python())
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"peer exports failed ({type(exc).__name__}: {exc}); measuring embedserve only")
        return [r for r in runners if not r.startswith("st-")]
    return runners


def _default_peer_python() -> Path:
    from bench.peers_env import peer_python

    return peer_python()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--copies", type=int, default=4, help="times the 200 reference texts are repeated"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runners", nargs="+", default=[*PEERS, *OURS], choices=[*PEERS, *OURS])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument(
        "--setup",
        action="store_true",
        help="create the peers' venv (~/.cache/embedserve/bench-peers/venv) from "
        "bench/peers-requirements.txt, export their models, and exit",
    )
    parser.add_argument(
        "--peer-python",
        type=Path,
        help="interpreter for the sentence-transformers runners instead of the --setup venv "
        "(it needs bench/peers-requirements.txt's packages)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        row = worker(args.worker, args.copies, args.threads, args.model_dir)
        print(json.dumps(row), flush=True)
        return
    if args.setup:
        from bench.peers_env import setup

        print(f"peers' models ready in {prepare(args.peer_python or setup())}")
        return

    peer_python = args.peer_python
    runners = _peer_runners(list(args.runners), peer_python)
    peer_python = peer_python or _default_peer_python()
    print(describe_machine())
    print(
        f"{args.copies} x 200 reference texts, {args.threads} threads, {args.rounds} alternated "
        "rounds, one process per runner per round",
        flush=True,
    )
    if any(r.startswith("st-") for r in runners):
        print(f"sentence-transformers peers: {_peer_versions(peer_python)}", flush=True)
        print(f"ONNX dynamic int8 config for this CPU: {int8_config()}", flush=True)
    results: dict[str, list[dict]] = {r: [] for r in runners}
    for number in range(args.rounds):
        for runner in runners:
            row = _run_worker(runner, args.copies, args.threads, peer_python)
            if row is not None:
                results[runner].append(row)
                print(
                    f"  round {number + 1}: {runner:<26} {row['texts_per_s']:8.1f} texts/s",
                    flush=True,
                )
    rows = {
        r: {
            "runner": r,
            "texts_per_s": statistics.median(x["texts_per_s"] for x in rs),
            "min_cos": rs[0]["min_cos"],
            "mean_cos": rs[0]["mean_cos"],
            "rounds": len(rs),
        }
        for r, rs in results.items()
        if rs
    }
    print_table(rows)
    print_goals(rows)
    if args.json:
        args.json.write_text(json.dumps(list(rows.values()), indent=1))


def _peer_versions(peer_python: Path) -> str:
    """The peers' package versions, said once so a table can be traced to its environment."""
    names = (
        "sentence-transformers transformers optimum-onnx optimum-intel onnxruntime openvino nncf"
    )
    code = (
        "from importlib.metadata import version\n"
        f"print(' | '.join(f'{{n}} {{version(n)}}' for n in {names.split()!r}))"
    )
    proc = subprocess.run(
        [str(peer_python), "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    return proc.stdout.strip() or f"(unknown: {proc.stderr.strip()[-200:]})"


def _fastest(rows: dict[str, dict], names: tuple[str, ...]) -> dict | None:
    present = [rows[n] for n in names if n in rows]
    return max(present, key=lambda r: r["texts_per_s"]) if present else None


def _baselines(rows: dict[str, dict]) -> dict[str, dict | None]:
    """The peers each goal of issue #10 divides by."""
    from embedserve.precision import PRECISIONS

    exact = PRECISIONS["fp32"].min_cosine
    # "Exact" by measured fidelity, not by name: on a CPU without bf16, OpenVINO's default
    # (a bf16 hint) runs in fp32 and is as exact as the torch and ONNX peers.
    exact_peers = tuple(n for n in EXACT_CANDIDATES if n in rows and rows[n]["min_cos"] >= exact)
    return {
        "best exact peer": _fastest(rows, exact_peers),
        "OpenVINO default": rows.get("st-openvino"),
        "best int8 peer": _fastest(rows, INT8_PEERS),
    }


def print_table(rows: dict[str, dict]) -> None:
    bases = _baselines(rows)
    print(
        "\n| runner | texts/s | min cos | mean cos | vs best exact peer | vs OpenVINO default"
        " | vs best int8 peer |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows.values():
        ratios = [
            f"{row['texts_per_s'] / base['texts_per_s']:.2f}x" if base else "-"
            for base in bases.values()
        ]
        print(
            f"| {row['runner']} | {row['texts_per_s']:.1f} | {row['min_cos']:.6f} "
            f"| {row['mean_cos']:.6f} | " + " | ".join(ratios) + " |"
        )
    for label, base in bases.items():
        if base:
            print(f"{label}: {base['runner']}")


def print_goals(rows: dict[str, dict]) -> None:
    """Issue #10's ratios: each precision's fastest embedserve runner over its peer, with the
    fidelity the precision promises (embedserve.precision) checked beside it."""
    from embedserve.precision import PRECISIONS

    bases = _baselines(rows)
    print("\nissue #10 goals (same run, same texts):")
    for precision, base_label, goal in GOALS:
        base = bases[base_label]
        ours = _fastest(rows, tuple(r for r in OURS if r.split("-")[1] == precision))
        if base is None or ours is None:
            print(
                f"  {precision}: not measured (needs an embedserve-{precision} runner and the "
                f"{base_label})"
            )
            continue
        floor = PRECISIONS[precision].min_cosine
        ratio = ours["texts_per_s"] / base["texts_per_s"]
        fidelity = "holds" if ours["min_cos"] >= floor else "MISSED"
        print(
            f"  {precision}: {ours['runner']} / {base['runner']} = {ratio:.2f}x "
            f"(goal >= {goal}x: {'met' if ratio >= goal else 'missed'}); "
            f"min cos {ours['min_cos']:.6f} vs floor {floor} ({fidelity})"
        )
