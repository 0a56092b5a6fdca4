"""The sentence-transformers peers of `python -m bench peers`: export, calibrate, encode.

Runs in the peers' own environment (bench/peers-requirements.txt, `python -m bench peers
--setup`), whose optimum pins clash with the project's test extra, so nothing here imports
embedserve: the parent process hands over the model folder and the calibration texts.

    python -m bench.peers_st export MODEL_DIR   # once: ONNX, OpenVINO and both int8 exports

Everything is offline: the exports read MODEL_DIR (a copy of the cached model) and the static
int8 helper is handed a local `datasets.Dataset` instead of its default hub dataset.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

ST_BATCH = 32  # encode()'s default
CALIBRATION_FILE = "calibration.json"  # written by the parent: {"texts": [...]}
OV_INT8_FILE = "openvino/openvino_model_qint8_quantized.xml"  # the static helper's file name


def int8_config(cpuinfo: str | None = None) -> str:
    """The ORT dynamic-quantization config sentence-transformers' docs pick for this CPU."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    flags = set(cpuinfo.split())
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    return "avx512" if "avx512f" in flags else "avx2"


def onnx_int8_file(model_dir: Path) -> str:
    """The dynamic int8 export's file, named by its weight type: `model_quint8_avx2.onnx` on AVX2."""
    found = sorted(model_dir.glob(f"onnx/model_*int8_{int8_config()}.onnx"))
    if not found:
        raise FileNotFoundError(f"no dynamic int8 export for {int8_config()} in {model_dir}/onnx")
    return found[0].relative_to(model_dir).as_posix()


def export(model_dir: Path) -> None:
    """ONNX fp32 + dynamic int8, OpenVINO fp32 + static int8, all saved into `model_dir`."""
    from sentence_transformers import (
        SentenceTransformer,
        export_dynamic_quantized_onnx_model,
    )

    onnx_model = SentenceTransformer(str(model_dir), backend="onnx", device="cpu")
    onnx_model.save_pretrained(str(model_dir))
    export_dynamic_quantized_onnx_model(onnx_model, int8_config(), str(model_dir))
    ov_model = SentenceTransformer(str(model_dir), backend="openvino", device="cpu")
    ov_model.save_pretrained(str(model_dir))
    texts = json.loads((model_dir / CALIBRATION_FILE).read_text())["texts"]
    _export_ov_static_int8(ov_model, model_dir, texts)


def _export_ov_static_int8(ov_model, model_dir: Path, texts: list[str]) -> None:
    """sentence-transformers' static int8 helper, calibrated on a local dataset (no hub)."""
    import datasets
    from optimum.intel import OVQuantizationConfig
    from sentence_transformers import export_static_quantized_openvino_model

    local = datasets.Dataset.from_dict({"text": texts})
    original = datasets.load_dataset
    # The helper (through optimum-intel) calls `datasets.load_dataset(name, name=config,
    # split=...)` at call time; hand it the local corpus instead of a hub dataset.
    datasets.load_dataset = lambda *args, **kwargs: local
    try:
        export_static_quantized_openvino_model(
            ov_model,
            quantization_config=OVQuantizationConfig(num_samples=len(local)),
            model_name_or_path=str(model_dir),
            dataset_name="local",
            dataset_config_name="local",
            dataset_split="train",
            column_name="text",
        )
    finally:
        datasets.load_dataset = original


def _model(runner: str, model_dir: Path, threads: int):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    if runner == "st-torch":
        return SentenceTransformer(str(model_dir), device="cpu")
    if runner in ("st-onnx", "st-onnx-int8"):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # The same thread budget as every other runner (ORT's default is one per core).
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        kwargs = {"provider": "CPUExecutionProvider", "session_options": options}
        if runner == "st-onnx-int8":
            kwargs["file_name"] = onnx_int8_file(model_dir)
        return SentenceTransformer(
            str(model_dir), backend="onnx", device="cpu", model_kwargs=kwargs
        )
    if runner in ("st-openvino", "st-openvino-int8"):
        # Only the thread count: precision and the rest stay at OpenVINO's defaults.
        kwargs = {"ov_config": {"INFERENCE_NUM_THREADS": threads}}
        if runner == "st-openvino-int8":
            kwargs["file_name"] = OV_INT8_FILE
        return SentenceTransformer(
            str(model_dir), backend="openvino", device="cpu", model_kwargs=kwargs
        )
    raise ValueError(f"not a sentence-transformers runner: {runner!r}")


def st_encoder(runner: str, model_dir: Path, threads: int) -> Callable[[list[str]], np.ndarray]:
    model = _model(runner, model_dir, threads)
    return lambda texts: model.encode(
        texts, batch_size=ST_BATCH, normalize_embeddings=True, convert_to_numpy=True
    )


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[0] != "export":
        sys.exit("usage: python -m bench.peers_st export MODEL_DIR")
    export(Path(argv[1]))


if __name__ == "__main__":
    main(sys.argv[1:])
