"""Every Python and shell example of the docs (and the README) runs, against one real server.

The server is `embedserve serve --api-key sk-local --batch-api-key sk-corpus-job` with
all-MiniLM-L6-v2 and a tiny random cross-encoder served as `reranker`, started once for every page; examples name it at its
documented address, 127.0.0.1:8000, which is rewritten to the test server's port. Each page runs
in document order in one fresh process, its Python blocks sharing one namespace as a reader
pasting them in order would, in a folder holding the files the examples read (`docs.jsonl`,
`./my-cross-encoder`, ...).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import embedserve
import pytest

from ..support import fill_tiktoken_cache, free_port, wait_ready
from .examples import examples

RUNNER = Path(__file__).with_name("run_page.py")
EXAMPLES = examples()
PAGES = sorted({example.page for example in EXAMPLES if example.not_run is None})


def _corpus(folder: Path) -> None:
    """The input files the corpus and command-line examples name."""
    texts = ["The cat sat on the mat.", "Embeddings are vectors.", "Parquet stores columns."]
    lines = [json.dumps({"id": f"d{i}", "text": text}) for i, text in enumerate(texts)]
    (folder / "docs.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "data" / "a").mkdir(parents=True)
    rows = "\n".join(f"c{i},{text}" for i, text in enumerate(texts))
    (folder / "data" / "a" / "part.csv").write_text("doc_id,body\n" + rows + "\n")
    (folder / "corpus").mkdir()
    (folder / "corpus" / "docs.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "lines.txt").write_text("\n".join(texts) + "\n")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, minilm_dir) -> Path:
    from ..support import cross_encoders

    folder = tmp_path_factory.mktemp("docs-examples")
    cross_encoders.bert_cross_encoder(folder / "my-cross-encoder", minilm_dir)
    _corpus(folder)
    (folder / ".tiktoken").mkdir()
    fill_tiktoken_cache(folder / ".tiktoken")
    return folder


def _environment(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    # LangChain's client tokenizes with tiktoken, which would download its rank file.
    env["TIKTOKEN_CACHE_DIR"] = str(workdir / ".tiktoken")
    # The embedserve these tests import (installed in CI; the checkout's python/ in a dev tree,
    # whose compiled core is only there once built), not the checkout's python/ as such.
    package_root = str(Path(embedserve.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    # Put the running interpreter's scripts (embedserve, ...) first, as an activated venv would.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["HAYSTACK_TELEMETRY_ENABLED"] = "False"
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    return env


@pytest.fixture(scope="module")
def address(workdir: Path) -> Iterator[str]:
    port = free_port()
    log_path = workdir / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "embedserve.cli", "serve", "--port", str(port)]
            + ["--api-key", "sk-local", "--batch-api-key", "sk-corpus-job"]
            + ["--model", "all-MiniLM-L6-v2"]
            + ["--model", "./my-cross-encoder=reranker", "--log-level", "warning"],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_environment(workdir),
        )
    try:
        wait_ready(process, f"http://127.0.0.1:{port}", log_path)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_examples_are_found_and_every_skip_says_why():
    assert len(EXAMPLES) >= 25
    # Runnable examples far outnumber the ones that cannot run here (installs, servers that do
    # not return): a page that stops running its examples shows up as a count that moves.
    skipped = [example for example in EXAMPLES if example.not_run]
    assert len(skipped) <= 12, [example.name for example in skipped]
    assert all(len(example.not_run or "") > 10 for example in skipped)


@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run(page: str, address: str, workdir: Path, tmp_path: Path):
    blocks = [
        {"name": example.name, "language": example.language, "code": example.at(address)}
        for example in EXAMPLES
        if example.page == page and example.not_run is None
    ]
    script = tmp_path / "blocks.json"
    script.write_text(json.dumps(blocks))
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(script)],
        cwd=workdir,
        env=_environment(workdir),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-8000:]
    ran = [block["name"] for block in blocks if f"\nok {block['name']}\n" in "\n" + done.stdout]
    assert ran == [block["name"] for block in blocks], done.stdout[-4000:]
