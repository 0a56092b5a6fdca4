"""embedserve's precisions against sentence-transformers' own fast backends, one process each.

    python -m bench peers --rounds 3 --copies 4 --threads 2

Runners: sentence-transformers with torch, ONNX (fp32 and dynamic int8) and OpenVINO (default
and static int8), as its "Speeding up Inference" docs set them up, and embedserve in each of
its precisions. The texts are the 200 reference texts (tests/data) repeated `--copies` times;
each runner embeds them in its own fresh process, the runners take turns round after round,
and the table shows medians. Fidelity is min / mean cosine of the first copy against the fp32
sentence-transformers reference vectors.

The peers' models are exported once, offline, into the cache (`bench-peers/`): ONNX and
OpenVINO exports via optimum, dynamic int8 with sentence-transformers' own helper, and static
int8 with its OpenVINO helper fed a local dataset. Both static int8 models (the peer's and
embedserve's) calibrate on the same corpus, Python's documentation prose, so the reference
texts are held out from calibration for everyone.
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

MODEL = "all-MiniLM-L6-v2"
REFERENCE = Path(__file__).resolve().parent.parent / "tests" / "data" / f"{MODEL}.public.json"
ST_BATCH = 32  # encode()'s default
PEERS = ("st-torch", "st-onnx", "st-openvino", "st-onnx-int8", "st-openvino-int8")
OURS = (
    "embedserve-fp32",
    "embedserve-fp32-openvino",
    "embedserve-bf16",
    "embedserve-int8",
    "embedserve-int8-openvino",
)
EXACT_PEERS = ("st-torch", "st-onnx")
INT8_PEERS = ("st-onnx-int8", "st-openvino-int8")


def _peer_dir() -> Path:
    from embedserve.models.cache import cache_root

    return cache_root() / "bench-peers" / MODEL


def _int8_config() -> str:
    """The ORT quantization config sentence-transformers' docs pick for this CPU."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "avx512_vnni" if "avx512_vnni" in flags else ("avx512" if "avx512f" in flags else "avx2")


def prepare() -> Path:
    """Export the peers' models into the cache once (a few minutes); later calls return at once."""
    from embedserve.models import resolve_model_dir

    target = _peer_dir()
    done = target / ".prepared"
    if done.exists():
        return target
    from sentence_transformers import (
        SentenceTransformer,
        export_dynamic_quantized_onnx_model,
        export_static_quantized_openvino_model,
    )

    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(resolve_model_dir(MODEL), target)
    onnx_model = SentenceTransformer(str(target), backend="onnx", device="cpu")
    onnx_model.save_pretrained(str(target))
    export_dynamic_quantized_onnx_model(onnx_model, _int8_config(), str(target))
    ov_model = SentenceTransformer(str(target), backend="openvino", device="cpu")
    ov_model.save_pretrained(str(target))
    _export_ov_static_int8(ov_model, target, export_static_quantized_openvino_model)
    done.write_text("ok\n")
    return target


def _export_ov_static_int8(ov_model, target: Path, export) -> None:
    """sentence-transformers' static int8 helper, calibrated on a local dataset (no hub)."""
    import datasets
    from embedserve.models.static_int8 import calibration_texts
    from optimum.intel import OVQuantizationConfig

    local = datasets.Dataset.from_dict({"text": calibration_texts()})
    original = datasets.load_dataset
    # The helper calls load_dataset(name, config, split=...); hand it the local corpus instead.
    datasets.load_dataset = lambda *args, **kwargs: local
    try:
        export(
            ov_model,
            quantization_config=OVQuantizationConfig(num_samples=len(local)),
            model_name_or_path=str(target),
            dataset_name="local",
            dataset_config_name="local",
            dataset_split="train",
            column_name="text",
        )
    finally:
        datasets.load_dataset = original


def _st_model(runner: str, threads: int):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    peer = _peer_dir()
    if runner == "st-torch":
        from embedserve.models import resolve_model_dir

        return SentenceTransformer(str(resolve_model_dir(MODEL)), device="cpu")
    if runner == "st-onnx":
        return SentenceTransformer(
            str(peer),
            backend="onnx",
            device="cpu",
            model_kwargs={"provider": "CPUExecutionProvider"},
        )
    if runner == "st-onnx-int8":
        return SentenceTransformer(
            str(peer),
            backend="onnx",
            device="cpu",
            model_kwargs={
                "file_name": f"onnx/model_qint8_{_int8_config()}.onnx",
                "provider": "CPUExecutionProvider",
            },
        )
    if runner == "st-openvino":
        return SentenceTransformer(
            str(peer),
            backend="openvino",
            device="cpu",
            model_kwargs={"ov_config": {"INFERENCE_NUM_THREADS": threads}},
        )
    if runner == "st-openvino-int8":
        return SentenceTransformer(
            str(peer),
            backend="openvino",
            device="cpu",
            model_kwargs={
                "file_name": "openvino/openvino_model_qint8_quantized.xml",
                "ov_config": {"INFERENCE_NUM_THREADS": threads},
            },
        )
    raise ValueError(runner)


def _encoder(runner: str, threads: int):
    if runner.startswith("st-"):
        model = _st_model(runner, threads)
        return lambda texts: model.encode(
            texts, batch_size=ST_BATCH, normalize_embeddings=True, convert_to_numpy=True
        )
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
    )
    return lambda texts: engine.embed(texts).embeddings


def worker(runner: str, copies: int, threads: int) -> dict:
    reference = json.loads(REFERENCE.read_text())
    texts = reference["texts"] * copies
    encode = _encoder(runner, threads)
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


ROOT = Path(__file__).resolve().parent.parent


def _run_worker(runner: str, copies: int, threads: int, python: str) -> dict | None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    if python != sys.executable:
        # Another environment (the peers' pins clash with ours): find bench/ and the package.
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "python")])
    proc = subprocess.run(
        [
            python,
            "-m",
            "bench",
            "peers",
            "--worker",
            runner,
            "--copies",
            str(copies),
            "--threads",
            str(threads),
        ],
        check=False,
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
        "--peer-python",
        default=sys.executable,
        help="interpreter for the sentence-transformers runners, e.g. a venv "
        "with sentence-transformers 5.x + optimum-onnx + optimum-intel "
        "(they cannot share one with sentence-transformers 6.2, bench/NOTES.md)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.copies, args.threads)), flush=True)
        return

    runners = list(args.runners)
    if any(r.startswith("st-") and r != "st-torch" for r in runners):
        try:
            if args.peer_python == sys.executable:
                prepare()
            else:
                env = dict(
                    os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "python")])
                )
                subprocess.run(
                    [args.peer_python, "-c", "from bench.bench_peers import prepare; prepare()"],
                    check=True,
                    env=env,
                    timeout=1800,
                )
        except Exception as exc:  # noqa: BLE001 - say why, then measure what can be measured
            print(
                f"peer exports failed ({type(exc).__name__}: {exc}); "
                "running without the ONNX / OpenVINO peers",
                flush=True,
            )
            runners = [r for r in runners if not r.startswith("st-") or r == "st-torch"]
    print(describe_machine())
    print(
        f"{args.copies} x 200 reference texts, {args.threads} threads, {args.rounds} alternated "
        "rounds, one process per runner per round",
        flush=True,
    )
    results: dict[str, list[dict]] = {r: [] for r in runners}
    for number in range(args.rounds):
        for runner in runners:
            python = args.peer_python if runner.startswith("st-") else sys.executable
            row = _run_worker(runner, args.copies, args.threads, python)
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
    if args.json:
        args.json.write_text(json.dumps(list(rows.values()), indent=1))


def _best(rows: dict[str, dict], names: tuple[str, ...]) -> dict | None:
    present = [rows[n] for n in names if n in rows]
    return max(present, key=lambda r: r["texts_per_s"]) if present else None


def print_table(rows: dict[str, dict]) -> None:
    exact, ov, int8 = _best(rows, EXACT_PEERS), rows.get("st-openvino"), _best(rows, INT8_PEERS)
    print(
        "\n| runner | texts/s | min cos | mean cos | vs best exact peer | vs OpenVINO default"
        " | vs best int8 peer |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows.values():
        ratios = [
            f"{row['texts_per_s'] / base['texts_per_s']:.2f}x" if base else "-"
            for base in (exact, ov, int8)
        ]
        print(
            f"| {row['runner']} | {row['texts_per_s']:.1f} | {row['min_cos']:.6f} "
            f"| {row['mean_cos']:.6f} | " + " | ".join(ratios) + " |"
        )
    for label, base in (("best exact peer", exact), ("best int8 peer", int8)):
        if base:
            print(f"{label}: {base['runner']}")
