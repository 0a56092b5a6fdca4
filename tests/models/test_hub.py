"""Hub repo ids through the real huggingface_hub client, against a fake Hub on loopback."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import huggingface_hub.constants as hf_constants
import numpy as np
import pytest
from embedserve.engine import Engine
from embedserve.models import ModelNotFoundError, resolve, resolve_model_dir
from embedserve.models.resolve import HUB_PATTERNS
from huggingface_hub.errors import RepositoryNotFoundError
from huggingface_hub.utils import close_session

from ..support.fake_hub import FakeHub, folder_files

# Made up, so it cannot be confused with the catalog's "sentence-transformers/all-MiniLM-L6-v2".
REPO_ID = "embedserve-test/mini-lm"
# Files a real model repo carries that an embedding model must not fetch.
UNWANTED = {"pytorch_model.bin": b"\x80\x04 a pickle checkpoint, never to be downloaded"}
# An unreachable hub must fail well inside this, not hang a server start.
FAIL_FAST_S = 30


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def repo_files(minilm_dir: Path) -> dict[str, Path | bytes]:
    """The model folder as a hub repo would hold it, plus files an embedding model doesn't need."""
    # ".complete" is embedserve's own marker for a finished pull, not a repo file.
    return {**folder_files(minilm_dir, skip=(".complete",)), **UNWANTED}


@pytest.fixture(scope="module")
def fake_hub(repo_files: dict[str, Path | bytes]) -> Iterator[FakeHub]:
    with FakeHub() as hub:
        hub.add_repo(REPO_ID, repo_files)
        yield hub


def point_hub_client_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, home: Path) -> None:
    """Aim huggingface_hub at `endpoint`, with its cache and credentials inside `home`.

    huggingface_hub reads its environment once, at import, into `huggingface_hub.constants`,
    so the constants are patched too; the environment is set for anything read later (and for
    resolve.py's error message, which reports HF_ENDPOINT).
    """
    env = {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_OFFLINE": "0",
        # resolve.py setdefault()s these; setting them here keeps os.environ as the test found it.
        "HF_HUB_ETAG_TIMEOUT": "5",
        "HF_HUB_DOWNLOAD_TIMEOUT": "10",
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    # Every path huggingface_hub derived from HF_HOME at import (token, caches, telemetry files).
    original_home = hf_constants.HF_HOME
    for name, value in list(vars(hf_constants).items()):
        if name.isupper() and isinstance(value, str) and value.startswith(original_home):
            monkeypatch.setattr(hf_constants, name, str(home) + value[len(original_home) :])
    constants = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_OFFLINE": False,
    }
    for name, value in constants.items():
        monkeypatch.setattr(hf_constants, name, value)


@pytest.fixture
def hf_home(tmp_path: Path) -> Iterator[Path]:
    """An empty huggingface_hub home; the shared HTTP client is rebuilt around each test."""
    # The client is created once per process and caches proxies and open connections: start
    # fresh so it reads this test's environment, and close it after so no socket outlives the test.
    close_session()
    yield tmp_path / "hf"
    close_session()


@pytest.fixture
def hub_home(fake_hub: FakeHub, hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    point_hub_client_at(monkeypatch, fake_hub.endpoint, hf_home)
    return hf_home


def test_hub_repo_downloads_what_an_embedding_model_needs(
    fake_hub, hub_home, repo_files, minilm_dir
):
    before = len(fake_hub.downloads())
    folder = resolve_model_dir(REPO_ID)

    assert folder.is_relative_to(hub_home / "hub")
    wanted = {path for path in repo_files if any(fnmatch(path, p) for p in HUB_PATTERNS)}
    assert {"config.json", "tokenizer.json", "model.safetensors", "1_Pooling/config.json"} <= wanted
    assert _files_under(folder) == wanted
    assert sorted(fake_hub.downloads()[before:]) == sorted(wanted), "each wanted file, once"
    assert _sha256(folder / "model.safetensors") == _sha256(minilm_dir / "model.safetensors")
    for path in wanted - {"model.safetensors"}:
        assert (folder / path).read_bytes() == (minilm_dir / path).read_bytes(), path


def test_second_resolve_is_served_from_the_cache(fake_hub, hub_home):
    first = resolve_model_dir(REPO_ID)
    downloads = len(fake_hub.downloads())
    assert resolve_model_dir(REPO_ID) == first
    assert len(fake_hub.downloads()) == downloads, "nothing downloaded twice"


def test_unknown_repo_names_the_repo(fake_hub, hub_home):
    with pytest.raises(ModelNotFoundError, match="'embedserve-test/no-such-model'") as caught:
        resolve_model_dir("embedserve-test/no-such-model")
    assert isinstance(caught.value.__cause__, RepositoryNotFoundError)
    assert fake_hub.endpoint in str(caught.value)


def test_unreachable_hub_fails_fast_and_names_the_endpoint(hf_home, monkeypatch):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    point_hub_client_at(monkeypatch, endpoint, hf_home)

    start = time.monotonic()
    with pytest.raises(ModelNotFoundError, match="'embedserve-test/mini-lm'") as caught:
        resolve_model_dir(REPO_ID)
    assert time.monotonic() - start < FAIL_FAST_S
    assert endpoint in str(caught.value)
    assert "catalog name" in str(caught.value), "the message says what works offline"
    assert caught.value.__cause__ is not None


def test_hub_that_never_answers_fails_within_the_timeout(hf_home, monkeypatch):
    # The same code path with a shorter wait: the first call that goes unanswered gives up after
    # HUB_TIMEOUT_S (10 s by default) whatever the machine's speed, and the test asserts only that
    # it gives up.
    monkeypatch.setattr(resolve, "HUB_TIMEOUT_S", 2)
    with socket.socket() as silent:  # accepts connections (backlog) and never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        point_hub_client_at(monkeypatch, endpoint, hf_home)
        start = time.monotonic()
        with pytest.raises(ModelNotFoundError, match=endpoint):
            resolve_model_dir(REPO_ID)
        assert time.monotonic() - start < FAIL_FAST_S


def test_downloaded_repo_resolves_while_the_hub_is_down(fake_hub, hub_home, monkeypatch):
    folder = resolve_model_dir(REPO_ID)
    point_hub_client_at(monkeypatch, f"http://127.0.0.1:{_closed_port()}", hub_home)

    assert resolve_model_dir(REPO_ID) == folder


def test_engine_loads_a_hub_repo_id(fake_hub, hub_home, reference, tmp_path, monkeypatch):
    # Graphs compiled from the downloaded weights go to a scratch cache, not the user's.
    monkeypatch.setenv("EMBEDSERVE_CACHE", str(tmp_path / "embedserve"))
    engine = Engine.from_pretrained(REPO_ID)

    assert engine.model_info.name == REPO_ID
    assert engine.model_info.dimension == 384
    hello = engine.embed(["hello world"]).embeddings
    assert hello.shape == (1, 384)
    assert np.linalg.norm(hello[0].astype(np.float64)) == pytest.approx(1.0, abs=1e-5)
    vector = engine.embed(reference["texts"][:1]).embeddings[0].astype(np.float64)
    expected = reference["normalized"][0].astype(np.float64)
    assert vector @ expected / (np.linalg.norm(vector) * np.linalg.norm(expected)) >= 0.99999
