"""`pull` and `serve` build, before any model loads, the very graph each kind of model then opens
(kinds.build_graph): a worker finds it built, and none compiles another. When they built an
embedder's CPU graph for every folder, a cross-encoder's int8 was the static graph (it loads the
dynamic one), a SPLADE's the hidden states (it loads a graph ending in the sparse pairs), an
embedder's on CUDA the fp32 graph (it loads fp16, pooling in the graph), and a ColBERT's int8
failed on its config."""

from __future__ import annotations

from pathlib import Path

import pytest
from embedserve.cli import _parser, main
from embedserve.engine import Engine
from embedserve.kinds import loader_for
from embedserve.runtime import cuda
from embedserve.server.cli import build_graphs, config_from_args
from embedserve.sparse import SparseEncoder

from tests.support.colbert import build_colbert
from tests.support.cross_encoders import bert_cross_encoder
from tests.support.splade import tiny_masked_lm
from tests.support.tiny import Recipe, build, quiet

EMBEDDER = Recipe(
    "bert",
    "bert",
    {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 48,
        "max_position_embeddings": 64,
        "vocab_size": 30522,
    },
    pooling="mean",
    normalize=True,
    max_seq_length=48,
)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, minilm_dir, isolated_cache) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("prebuild")
    return {
        "embedder": quiet(build, EMBEDDER, minilm_dir, root / "embedder")[0],
        "cross-encoder": bert_cross_encoder(root / "cross-encoder", minilm_dir),
        "splade": tiny_masked_lm("bert", root / "splade", minilm_dir, seed=1),
        "colbert": build_colbert(root / "colbert", minilm_dir),
    }


def _pulled(capsys, *argv: str) -> Path:
    assert main(["pull", *argv]) == 0, capsys.readouterr().err
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("onnx graph: ")]
    return Path(line.removeprefix("onnx graph: "))


@pytest.mark.parametrize(
    ("kind", "precision"),
    [
        ("embedder", "fp32"),
        ("embedder", "int8"),
        ("cross-encoder", "fp32"),
        ("cross-encoder", "int8"),
        ("splade", "fp32"),
        ("colbert", "fp32"),
        ("colbert", "int8"),
    ],
)
def test_pull_and_serve_build_the_graph_the_model_loads(folders, capsys, kind, precision):
    folder = folders[kind]
    flags = ["--precision", precision, "--providers", "cpu"]
    pulled = _pulled(capsys, str(folder), *flags)
    args = _parser().parse_args(["serve", "--model", str(folder), *flags])
    (served,) = build_graphs(config_from_args(args, {}))
    model = loader_for(folder).from_pretrained(folder, precision=precision, providers="cpu")
    session = model.head.session if isinstance(model, SparseEncoder) else model.session
    assert pulled == served == session.path


def test_pull_refuses_a_precision_the_kind_does_not_run(folders, capsys):
    # The kind's own rule, as loading gives it (the embedder's config reader refused it before).
    assert main(["pull", str(folders["splade"]), "--precision", "int8"]) == 1
    assert "sparse encoders run fp32 on onnxruntime, not 'int8'" in capsys.readouterr().err


def test_pull_builds_the_pooled_fp16_graph_an_embedder_loads_on_cuda(folders, capsys, monkeypatch):
    # A machine that plans as one with a GPU does (plan_load asks runtime.cuda.on_gpu): pull
    # built the fp32 graph, which the embedder does not load there.
    monkeypatch.setattr(cuda, "on_gpu", lambda providers: True)
    folder = folders["embedder"]
    pulled = _pulled(capsys, str(folder))
    engine = Engine.from_pretrained(folder)  # its session runs on the CPU here
    assert engine.session.pooled and engine.model_info.precision == "fp16"
    assert pulled == engine.session.path
