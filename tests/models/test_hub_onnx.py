"""Hub repos that ship an ONNX graph: only the graph (and its external data) is downloaded,
unless `compile` asks for the safetensors weights."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from embedserve.engine import Engine
from embedserve.models import ModelNotFoundError, onnx_for, resolve_model_dir
from embedserve.models.resolve import hub_files

from ..support.fake_hub import FakeHub, folder_files
from .test_hub import point_hub_client_at

REPO_ID = "embedserve-test/mini-lm-onnx"
CONFIGS = {"config.json", "tokenizer.json", "modules.json", "1_Pooling/config.json", "README.md"}


@pytest.fixture(scope="module")
def onnx_repo(minilm_dir: Path, tmp_path_factory) -> dict[str, Path | bytes]:
    """MiniLM as a repo like bge-m3's: safetensors, plus onnx/model.onnx with external data."""
    graph = onnx.load(str(onnx_for(minilm_dir)))
    out = tmp_path_factory.mktemp("onnx")
    onnx.save_model(
        graph,
        str(out / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx_data",
        size_threshold=1024,
    )
    assert (out / "model.onnx_data").stat().st_size > 80e6  # the weights really are outside
    files: dict[str, Path | bytes] = folder_files(minilm_dir, skip=(".complete",))
    files["onnx/model.onnx"] = out / "model.onnx"
    files["onnx/model.onnx_data"] = out / "model.onnx_data"
    files["2_Dense/pytorch_model.bin"] = b"never fetched: 2_Dense has model.safetensors"
    files["2_Dense/model.safetensors"] = b"not used: modules.json lists no Dense"
    files["pytorch_model.bin"] = b"a pickle checkpoint, never to be downloaded"
    return files


@pytest.fixture(scope="module")
def hub(onnx_repo) -> Iterator[FakeHub]:
    with FakeHub() as fake:
        fake.add_repo(REPO_ID, onnx_repo)
        fake.add_repo("embedserve-test/configs-only", {"config.json": b"{}"})
        yield fake


@pytest.fixture
def home(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from huggingface_hub.utils import close_session

    close_session()
    point_hub_client_at(monkeypatch, hub.endpoint, tmp_path / "hf")
    monkeypatch.setenv("EMBEDSERVE_CACHE", str(tmp_path / "embedserve"))
    yield tmp_path / "hf"
    close_session()


def test_file_selection_rules():
    files = [
        "config.json",
        "model.safetensors",
        "onnx/model.onnx",
        "onnx/model.onnx_data",
        "onnx/model_quantized.onnx",
        "model.onnx",
        "pytorch_model.bin",
        "README.md",
        "1_Pooling/config.json",
        "2_Dense/config.json",
        "2_Dense/pytorch_model.bin",
        "3_Dense/config.json",
        "3_Dense/pytorch_model.bin",
        "3_Dense/model.safetensors",
    ]
    chosen = set(hub_files(files))
    # The root graph wins over onnx/; no safetensors, no other graph, no pickles beside safetensors.
    assert "model.onnx" in chosen and "onnx/model.onnx" not in chosen
    assert (
        not {
            "model.safetensors",
            "onnx/model_quantized.onnx",
            "pytorch_model.bin",
            "3_Dense/pytorch_model.bin",
        }
        & chosen
    )
    assert {"2_Dense/pytorch_model.bin", "3_Dense/model.safetensors", "README.md"} <= chosen
    compiled = set(hub_files(files, compile=True))
    assert "model.safetensors" in compiled and not {"model.onnx", "onnx/model.onnx"} & compiled
    # An older repo whose only weights are pickles (sharded here) gets those.
    pickled = ["config.json", "pytorch_model.bin.index.json", "tf_model.h5"]
    pickled += [f"pytorch_model-0000{n}-of-00002.bin" for n in (1, 2)]
    assert set(hub_files(pickled)) == set(pickled) - {"tf_model.h5"}


def test_repo_with_onnx_downloads_only_the_graph(hub, home, reference):
    before = len(hub.downloads())
    folder = resolve_model_dir(REPO_ID)
    got = set(hub.downloads()[before:])
    assert {"onnx/model.onnx", "onnx/model.onnx_data"} | CONFIGS <= got
    assert not {"model.safetensors", "pytorch_model.bin", "2_Dense/pytorch_model.bin"} & got
    assert not (folder / "model.safetensors").exists()

    engine = Engine.from_pretrained(REPO_ID)
    assert engine.session.path == folder / "onnx" / "model.onnx"
    vectors = engine.embed(reference["texts"][:20]).embeddings.astype(np.float64)
    cos = (vectors * reference["normalized"][:20]).sum(1)
    assert cos.min() >= 0.99999


def test_compile_downloads_the_safetensors_instead(hub, home, reference, tmp_path):
    before = len(hub.downloads())
    folder = resolve_model_dir(REPO_ID, compile=True)
    got = set(hub.downloads()[before:])
    assert "model.safetensors" in got and not {"onnx/model.onnx", "onnx/model.onnx_data"} & got
    graph = onnx_for(folder, compile=True)
    assert graph.is_relative_to(tmp_path / "embedserve" / "compiled")
    engine = Engine.from_pretrained(REPO_ID, compile=True)
    vectors = engine.embed(reference["texts"][:5]).embeddings.astype(np.float64)
    assert (vectors * reference["normalized"][:5]).sum(1).min() >= 0.99999


def test_repo_without_weights_is_named(hub, home):
    with pytest.raises(
        ModelNotFoundError,
        match="configs-only.*no model.onnx, model.safetensors or pytorch_model.bin",
    ):
        resolve_model_dir("embedserve-test/configs-only")
    with pytest.raises(
        ModelNotFoundError, match="no model.safetensors or pytorch_model.bin to compile"
    ):
        resolve_model_dir("embedserve-test/configs-only", compile=True)
