"""The family a model belongs to, as `embedserve models` and TEI's `/info` report it: a decoder
(llama), a remote-code encoder (nomic_bert) and a StaticEmbedding stack, each a tiny folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from embedserve.engine import Engine
from embedserve.models.family import model_family
from embedserve.server.config import ModelSpec

from tests.server.conftest import live_server, unhurried
from tests.support.remote_code import save_folder
from tests.support.tiny import build, quiet

from .test_families import RECIPES
from .test_nomic_bert import PROMPTS, V15, _reference
from .test_static_embedding import build_static

FAMILIES = {"llama": "llama", "nomic": "nomic_bert", "static": "StaticEmbedding"}


@pytest.fixture(scope="module")
def folders(
    tmp_path_factory: pytest.TempPathFactory, minilm_tokenizer_dir: Path, isolated_cache: None
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reported")
    llama, _ = quiet(build, RECIPES["llama"], minilm_tokenizer_dir, root / "llama")
    nomic = save_folder(
        root / "nomic",
        _reference(V15),
        V15,
        minilm_tokenizer_dir,
        pooling="mean",
        normalize=True,
        max_seq_length=48,
        prompts=PROMPTS,
    )
    static, _ = quiet(build_static, minilm_tokenizer_dir, root / "static")
    return {"llama": llama, "nomic": nomic, "static": static}


def test_the_registry_names_each_family(folders: dict[str, Path], tmp_path: Path) -> None:
    assert {k: model_family(v) for k, v in folders.items()} == FAMILIES
    # A graph of an architecture embedserve does not compile has no family, not a guess.
    shutil.copytree(folders["llama"], tmp_path / "bart")
    config = json.loads((tmp_path / "bart" / "config.json").read_text())
    config.update(model_type="bart", architectures=["BartModel"])
    (tmp_path / "bart" / "config.json").write_text(json.dumps(config))
    assert model_family(tmp_path / "bart") is None
    assert model_family(tmp_path / "nowhere") is None


def test_embedserve_models_lists_the_family(folders: dict[str, Path], tmp_path: Path) -> None:
    for name, folder in folders.items():
        shutil.copytree(folder, tmp_path / "models" / name)
        (tmp_path / "models" / name / ".complete").write_text("x\n")
    done = subprocess.run(
        [sys.executable, "-m", "embedserve.cli", "models"],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        env={**os.environ, "EMBEDSERVE_CACHE": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    others = done.stdout.split("Other folders in the cache:\n")[1].splitlines()
    listed = {line.split()[0]: line.split()[-1] for line in others if line.startswith("  ")}
    assert listed == FAMILIES


@pytest.mark.parametrize("name", ["nomic", "static"])
def test_info_names_the_family(name: str, folders: dict[str, Path]) -> None:
    engine = Engine.from_pretrained(folders[name], name=name)
    assert engine.model_info.family == FAMILIES[name]
    config = unhurried(models=(ModelSpec(str(folders[name]), name),))
    with live_server(config, engines={name: engine}) as server:
        info = httpx.get(server.url + "/info", timeout=30).json()
    assert info["model_id"] == name and info["model_family"] == FAMILIES[name]
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}
