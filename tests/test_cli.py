"""`embedserve embed | pull | bench` as a user runs them, in a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from embedserve.engine import Engine


def embedserve(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embedserve.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.from_pretrained("all-MiniLM-L6-v2")


def test_embed_prints_the_engines_vectors_as_json(engine):
    texts = ["a first sentence", "ünïcode and 中文 and 🙂"]
    done = embedserve("embed", *texts)
    assert done.returncode == 0, done.stderr
    vectors = np.asarray(json.loads(done.stdout), dtype=np.float32)
    np.testing.assert_array_equal(vectors, engine.embed(texts).embeddings)


def test_embed_reads_stdin_and_cuts_dimensions(engine):
    done = embedserve("embed", "--dimensions", "64", stdin="line one\nline two\n")
    assert done.returncode == 0, done.stderr
    vectors = np.asarray(json.loads(done.stdout), dtype=np.float32)
    np.testing.assert_array_equal(
        vectors, engine.embed(["line one", "line two"], dimensions=64).embeddings
    )


def test_embed_refuses_text_that_is_not_utf8():
    """Undecodable bytes became lone surrogates and a TypeError traceback from tokenization."""
    command = [sys.executable, "-m", "embedserve.cli", "embed"]
    from_stdin = subprocess.run(
        command, input=b"fine\ncaf\xe9 au lait\n", capture_output=True, timeout=300, check=False
    )
    assert from_stdin.returncode == 1
    assert from_stdin.stderr.decode().strip() == (
        "embedserve: error: stdin line 2 is not valid UTF-8 (byte 4: invalid continuation byte)"
    )
    from_argv = subprocess.run(
        [*command, "fine", b"caf\xe9"], capture_output=True, timeout=300, check=False
    )
    assert from_argv.returncode == 1
    assert from_argv.stderr.decode().strip() == (
        "embedserve: error: text 2 on the command line is not valid UTF-8"
    )


def test_embed_refuses_a_blank_stdin_line():
    """It was dropped, so every vector after it stood on the line above its text."""
    done = embedserve("embed", stdin="one\n\nthree\n")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "embedserve: error: stdin line 2 is blank: each line is one text and gets one vector"
    )


@pytest.mark.parametrize(
    "command",
    [
        ["embed", "--model", "{model}", "text"],
        ["bench", "--model", "{model}", "--texts", "4"],
        ["pull", "{model}", "--precision", "int8"],
        ["embed-file", "{input}", "--out", "{out}", "--model", "{model}"],
    ],
)
def test_an_unreadable_tokenizer_json_is_named(command, minilm_dir, tmp_path):
    """tokenizers raises a bare Exception for it, which ended in a traceback."""
    model = tmp_path / "model"
    model.mkdir()
    for source in minilm_dir.iterdir():
        (model / source.name).symlink_to(source)
    (model / "tokenizer.json").unlink()
    (model / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nope"}}')
    (tmp_path / "texts.txt").write_text("one\ntwo\n")
    names = {"model": model, "input": tmp_path / "texts.txt", "out": tmp_path / "out"}
    done = embedserve(*(word.format(**names) for word in command))
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(
        f"embedserve: error: {model / 'tokenizer.json'}: the tokenizers library cannot read it ("
    ), done.stderr


@pytest.mark.parametrize(
    ("name", "edit", "says"),
    [
        ("modules.json", lambda _: '["x"]', "is not a list of modules"),
        ("model.safetensors", lambda _: "<html>", "is not a readable safetensors file"),
        (
            "config.json",
            lambda raw: json.dumps({**json.loads(raw), "num_attention_heads": 0}),
            "num_attention_heads is 0; it must be at least 1",
        ),
        ("config.json", lambda _: "[]", "is not a JSON object"),
    ],
    ids=["modules.json", "safetensors", "heads", "config.json"],
)
def test_a_broken_model_file_is_named_not_a_traceback(name, edit, says, minilm_dir, tmp_path):
    """These ended in an AttributeError, safetensors' SafetensorError, a ZeroDivisionError and a
    TypeError traceback."""
    model = tmp_path / "model"
    model.mkdir()
    for source in minilm_dir.iterdir():
        (model / source.name).symlink_to(source)
    (model / name).unlink()
    (model / name).write_text(edit((minilm_dir / name).read_text(errors="replace")))
    done = subprocess.run(
        [sys.executable, "-m", "embedserve.cli", "embed", "--model", str(model), "text"],
        env={**os.environ, "EMBEDSERVE_CACHE": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"embedserve: error: {model / name}"), done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("kind", ["cross-encoder", "classifier", "LLM reranker", "SPLADE"])
def test_embed_says_a_model_is_not_an_embedder_and_compiles_nothing(
    kind, minilm_dir, splade_dir, tmp_path
):
    """It compiled the folder as an embedder's graph into the cache, then failed on 'no [batch,
    sequence, hidden] output among {'logits'...}'."""
    from .support.cross_encoders import bert_cross_encoder
    from .test_llm_rerankers import decoder

    models = {
        "cross-encoder": lambda: bert_cross_encoder(tmp_path / "rr", minilm_dir),
        "classifier": lambda: bert_cross_encoder(tmp_path / "cls", minilm_dir, num_labels=3),
        "LLM reranker": lambda: decoder(
            tmp_path / "llm", minilm_dir, "qwen3", "CausalLM", tied=True
        ),
        "SPLADE": lambda: splade_dir,
    }
    model = models[kind]()
    cache = tmp_path / "cache"
    done = subprocess.run(
        [sys.executable, "-m", "embedserve.cli", "embed", "--model", str(model), "text"],
        env={**os.environ, "EMBEDSERVE_CACHE": str(cache)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert f"embedserve: error: {model} is a" in done.stderr, done.stderr
    assert "not an embedding model: `embedserve serve --model` serves it on" in done.stderr
    assert kind.split()[0].lower() in done.stderr.lower()
    assert not (cache / "compiled").exists() or not any((cache / "compiled").iterdir())


def test_embed_with_bad_dimensions_fails_with_a_message():
    done = embedserve("embed", "--dimensions", "0", "text")
    assert done.returncode == 1
    assert "dimensions must be between 1 and 384, got 0" in done.stderr


def test_pull_prints_the_model_folder_and_graph():
    done = embedserve("pull", "all-MiniLM-L6-v2")
    assert done.returncode == 0, done.stderr
    assert "all-MiniLM-L6-v2" in done.stdout and "model.onnx" in done.stdout


def test_pull_of_an_unknown_name_fails_with_the_catalog():
    done = embedserve("pull", "./not-a-model-folder")
    assert done.returncode == 1
    assert "catalog name" in done.stderr


@pytest.mark.parametrize("command", [["models"], ["pull", "tiktoken"]])
def test_a_cache_variable_naming_a_file_is_named(command, tmp_path, monkeypatch):
    """EMBEDSERVE_CACHE set to a file: `models` listed every model "not cached" and exited 0,
    and `pull`/`embed` said only "[Errno 20] Not a directory: '.../models'"."""
    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("EMBEDSERVE_CACHE", str(tmp_path / "cache"))
    done = embedserve(*command)
    assert done.returncode == 1
    cache = tmp_path / "cache"
    says = (
        f"EMBEDSERVE_CACHE={cache} is a file: the cache is a folder (new, or one embedserve made)"
    )
    assert done.stderr.splitlines() == [f"embedserve: error: {says}"]


def test_bench_reports_texts_per_second():
    done = embedserve("bench", "--texts", "16", "--repeats", "1", "--batch-size", "8")
    assert done.returncode == 0, done.stderr
    assert "texts/s" in done.stdout and "CPUExecutionProvider" in done.stdout


@pytest.mark.parametrize("flag", ["--texts", "--words", "--batch-size", "--repeats"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_bench_refuses_counts_below_one(flag, value):
    """--texts 0 ended in a ZeroDivisionError traceback; negative counts printed nonsense, rc 0."""
    done = embedserve("bench", flag, value)
    assert done.returncode == 2
    assert f"argument {flag}: must be at least 1, got {value}" in done.stderr


def test_version_is_the_packages_one_version():
    from embedserve import __version__

    done = embedserve("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"embedserve {__version__}"
    # Semantic versioning: MAJOR.MINOR.PATCH, optionally a pre-release or dev suffix.
    assert re.fullmatch(r"\d+\.\d+\.\d+([-.]?(a|b|rc|dev)\d+)?", __version__), __version__
    changelog = (Path(__file__).resolve().parents[1] / "CHANGELOG.md").read_text()
    assert f"## [{__version__}]" in changelog


def test_embed_on_cuda_without_a_cuda_device_is_refused_and_builds_nothing(minilm_dir, tmp_path):
    """`--providers cuda` on a machine with no GPU: ONNX Runtime logged its CUDA library errors,
    fell back to the CPU on its own, and the model ran there the fp16 graph planned for the GPU,
    built into the cache for it, with no word from embedserve."""
    from embedserve.runtime.providers import cuda_device_present

    if cuda_device_present():
        pytest.skip("this machine has a CUDA device")
    cache = tmp_path / "cache"
    done = subprocess.run(
        [sys.executable, "-m", "embedserve.cli", "embed", "--model", str(minilm_dir), "text"],
        env={**os.environ, "EMBEDSERVE_CACHE": str(cache), "EMBEDSERVE_PROVIDERS": "cuda"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        "embedserve: error: providers: ['cuda'] asked for, but this machine has no CUDA device "
        "(the CUDA driver reports none); use cpu, or auto (CUDA where a GPU is present, else "
        "the CPU)\n"
    )
    assert not cache.exists() or not any(cache.rglob("*.onnx"))


def test_pull_prepares_the_cuda_graph_on_a_machine_without_a_gpu(minilm_dir, monkeypatch, capsys):
    """deploy/Dockerfile.cuda runs `pull --providers cuda` where no GPU is: pull prepares the
    fp16 graph the GPU machine will load, while `embed` here is refused (above)."""
    import onnxruntime as ort
    from embedserve.cli import main
    from embedserve.runtime import providers

    monkeypatch.setattr(ort, "get_available_providers", lambda: [providers.CUDA, providers.CPU])
    monkeypatch.setattr(providers, "cuda_device_present", lambda: False)
    assert main(["pull", str(minilm_dir), "--providers", "cuda"]) == 0
    graph = capsys.readouterr().out.splitlines()[-1]
    assert graph.startswith("onnx graph: ") and "fp16" in graph, graph
