"""Broken model folders: each fails with one ValueError (the CLI's "embedserve: error: ...")
that names the file and what is wrong with it, never a KeyError, TypeError, AttributeError or
ZeroDivisionError from deep inside the loader, or a folder read as something else.

The folder is a tiny random BERT saved as sentence-transformers saves one (mean pooling,
Normalize) with all-MiniLM's tokenizer; each case breaks one file of a copy of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from embedserve.engine import Engine

from tests.support.tiny import TOKENIZER_FILES, tiny_bert_folder

MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {
        "idx": 2,
        "name": "2",
        "path": "2_Normalize",
        "type": "sentence_transformers.models.Normalize",
    },
]


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory, minilm_dir, isolated_cache) -> Path:
    folder = tiny_bert_folder(tmp_path_factory.mktemp("tiny-st"), minilm_dir)
    (folder / "modules.json").write_text(json.dumps(MODULES))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True})
    )
    return folder


def broken(good: Path, target: Path, edit: Callable[[Path], None]) -> Path:
    shutil.copytree(good, target)
    edit(target)
    return target


def set_json(name: str, **fields) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / name
        data = json.loads(path.read_text()) if path.exists() else {}
        data.update(fields)
        path.write_text(json.dumps(data))

    return edit


def write(name: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_text(text)


def test_the_unbroken_folder_loads(good_folder):
    engine = Engine.from_pretrained(good_folder)
    assert engine.embed(["a text"]).embeddings.shape == (1, 32)


# (what is broken, the edit, the file the error names, words the error says)
NOT_JSON = [
    (name, write(name, "{not json"), name, "is not valid JSON")
    for name in (
        "config.json",
        "modules.json",
        "1_Pooling/config.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "tokenizer_config.json",
    )
]
BAD_SHAPES = [
    ("config.json a list", write("config.json", "[1, 2]"), "config.json", "not a JSON object"),
    ("modules.json entries", write("modules.json", '["x"]'), "modules.json", "list of modules"),
    ("modules.json an object", write("modules.json", "{}"), "modules.json", "list of modules"),
    (
        "modules.json idx",
        write("modules.json", json.dumps([{**MODULES[0], "idx": "first"}, MODULES[1]])),
        "modules.json",
        "idx",
    ),
    (
        "Pooling folder missing",
        lambda folder: shutil.rmtree(folder / "1_Pooling"),
        "modules.json",
        "1_Pooling, which has no config.json",
    ),
]


@pytest.mark.parametrize(
    ("edit", "named", "says"),
    [case[1:] for case in NOT_JSON + BAD_SHAPES],
    ids=[case[0] for case in NOT_JSON + BAD_SHAPES],
)
def test_a_broken_json_file_is_named(good_folder, tmp_path, edit, named, says):
    """A JSONDecodeError said only "line 1 column 2"; a list config.json was a TypeError; a
    modules.json of strings an AttributeError; a Pooling folder that is not there was read as
    mean pooling, whatever the author's was."""
    folder = broken(good_folder, tmp_path / "m", edit)
    with pytest.raises(ValueError) as caught:
        Engine.from_pretrained(folder)
    assert str(folder / named) in str(caught.value)
    assert says in str(caught.value)


def truncate(name: str, keep: int) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).unlink()  # a copy of its own, not the good folder's inode
        (folder / name).write_bytes(data[:keep])

    return edit


BAD_WEIGHTS = [
    ("header cut", truncate("model.safetensors", 100), "model.safetensors", "not a readable"),
    ("tensors cut", truncate("model.safetensors", 200_000), "model.safetensors", "not a readable"),
    (
        "not safetensors",
        write("model.safetensors", "<html>rate limited</html>"),
        "model.safetensors",
        "not a readable safetensors file",
    ),
    (
        "no heads",
        set_json("config.json", num_attention_heads=0),
        "config.json",
        "num_attention_heads is 0; it must be at least 1",
    ),
    (
        "hidden_size text",
        set_json("config.json", hidden_size="thirty-two"),
        "config.json",
        "hidden_size is 'thirty-two'; it must be a whole number",
    ),
    (
        "eps text",
        set_json("config.json", layer_norm_eps="small"),
        "config.json",
        "layer_norm_eps is 'small'; it must be a number",
    ),
]


@pytest.mark.parametrize(
    ("edit", "named", "says"),
    [case[1:] for case in BAD_WEIGHTS],
    ids=[case[0] for case in BAD_WEIGHTS],
)
def test_broken_weights_and_sizes_are_named(good_folder, tmp_path, edit, named, says):
    """safetensors' own SafetensorError (neither a ValueError nor an OSError) and a
    ZeroDivisionError from `hidden % heads` reached the CLI as tracebacks; a size that is not a
    number said only "invalid literal for int()"."""
    folder = broken(good_folder, tmp_path / "m", edit)
    with pytest.raises(ValueError) as caught:
        Engine.from_pretrained(folder)
    assert str(folder / named) in str(caught.value)
    assert says in str(caught.value)


def test_a_folder_loads_once_its_weights_are_whole_again(good_folder, tmp_path):
    """The failed compile leaves nothing behind that the next load would take."""
    folder = broken(good_folder, tmp_path / "m", truncate("model.safetensors", 200_000))
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        Engine.from_pretrained(folder)
    shutil.copy(good_folder / "model.safetensors", folder / "model.safetensors")
    want = Engine.from_pretrained(good_folder).embed(["a text"]).embeddings
    assert (Engine.from_pretrained(folder).embed(["a text"]).embeddings == want).all()


ST_CONFIG = "config_sentence_transformers.json"
BAD_SETTINGS = [
    (
        "default prompt not a prompt",
        set_json(ST_CONFIG, prompts={"query": "query: "}, default_prompt_name="passage"),
        ST_CONFIG,
        "default_prompt_name 'passage' is not one of its prompts (document, query)",
    ),
    (
        "prompt not text",
        set_json(ST_CONFIG, prompts={"query": 5}, default_prompt_name="query"),
        ST_CONFIG,
        "prompts must map names to texts",
    ),
    ("prompts a list", set_json(ST_CONFIG, prompts=["query: "]), ST_CONFIG, "prompts must map"),
    (
        "max_seq_length text",
        set_json("sentence_bert_config.json", max_seq_length="long"),
        "",
        "sentence_bert_config.json's max_seq_length is 'long'",
    ),
]


@pytest.mark.parametrize(
    ("edit", "named", "says"),
    [case[1:] for case in BAD_SETTINGS],
    ids=[case[0] for case in BAD_SETTINGS],
)
def test_bad_settings_are_refused_at_load(good_folder, tmp_path, edit, named, says):
    """sentence-transformers refuses these folders when it loads them. embedserve loaded them,
    then failed every call that named no prompt as if the caller had asked for 'passage'
    ("prompt_name 'passage' is not one of this model's prompts"), every call with the prompt 5
    in a TypeError, and a text max_seq_length with "invalid literal for int()"."""
    folder = broken(good_folder, tmp_path / "m", edit)
    with pytest.raises(ValueError) as caught:
        Engine.from_pretrained(folder)
    assert str(folder / named) in str(caught.value)
    assert says in str(caught.value)


def test_a_null_prompt_and_a_default_among_sentence_transformers_own_are_fine(
    good_folder, tmp_path
):
    """A null prompt is an empty one, and "document" is a prompt of every model, to
    sentence-transformers as here."""
    edit = set_json(ST_CONFIG, prompts={"query": None}, default_prompt_name="document")
    engine = Engine.from_pretrained(broken(good_folder, tmp_path / "m", edit))
    plain = Engine.from_pretrained(good_folder)
    for prompt_name in (None, "query"):
        got = engine.embed(["a text"], prompt_name=prompt_name).embeddings
        assert (got == plain.embed(["a text"]).embeddings).all()


def with_dense(config: dict | None) -> Callable[[Path], None]:
    """A 32 -> 8 Dense module before Normalize, with `config` as its config.json (None: none)."""

    def edit(folder: Path) -> None:
        from safetensors.numpy import save_file

        dense = folder / "2_Dense"
        dense.mkdir()
        weight = np.random.default_rng(0).standard_normal((8, 32)).astype(np.float32)
        save_file({"linear.weight": weight}, str(dense / "model.safetensors"))
        if config is not None:
            (dense / "config.json").write_text(json.dumps(config))
        entry = {
            "idx": 2,
            "name": "2",
            "path": "2_Dense",
            "type": "sentence_transformers.models.Dense",
        }
        last = {**MODULES[2], "idx": 3, "path": "3_Normalize"}
        (folder / "modules.json").write_text(json.dumps([*MODULES[:2], entry, last]))

    return edit


IDENTITY = "torch.nn.modules.linear.Identity"
BAD_MODULES = [
    ("Dense without config.json", with_dense(None), "modules.json", "2_Dense, which has no config"),
    (
        "Dense out_features text",
        with_dense({"in_features": 32, "out_features": "x", "activation_function": IDENTITY}),
        "2_Dense/config.json",
        "out_features is 'x'; it must be a whole number",
    ),
    ("Pooling config a list", write("1_Pooling/config.json", "[1]"), "1_Pooling", "not a JSON"),
    (
        "pooling_mode a number",
        write("1_Pooling/config.json", '{"pooling_mode": 5}'),
        "1_Pooling/config.json",
        "pooling_mode is 5; it must be a mode's name",
    ),
    (
        "module unknown",
        write("modules.json", json.dumps([*MODULES, {**MODULES[2], "type": "x.LayerNorm"}])),
        "modules.json",
        "module 'x.LayerNorm' is not supported",
    ),
    (
        "pooling mode unknown",
        write("1_Pooling/config.json", '{"pooling_mode": "median"}'),
        "1_Pooling/config.json",
        "pooling mode 'median' is not supported",
    ),
    (
        "pooling modes, one unknown",
        write("1_Pooling/config.json", '{"pooling_mode": ["cls", "median"]}'),
        "1_Pooling/config.json",
        "pooling mode 'median' is not supported",
    ),
    (
        "Pooling dimension text",
        write("1_Pooling/config.json", '{"embedding_dimension": "abc", "pooling_mode": "cls"}'),
        "1_Pooling/config.json",
        "embedding_dimension is 'abc'",
    ),
    (
        "positions text",
        set_json("config.json", max_position_embeddings="many"),
        "config.json",
        "max_position_embeddings is 'many'; it must be a whole number",
    ),
    (
        "architectures numbers",
        set_json("config.json", model_type="nope", architectures=[5]),
        "config.json",
        "architectures ['5'] (model_type 'nope') cannot be compiled",
    ),
]


@pytest.mark.parametrize(
    ("edit", "named", "says"),
    [case[1:] for case in BAD_MODULES],
    ids=[case[0] for case in BAD_MODULES],
)
def test_broken_module_configs_are_named(good_folder, tmp_path, edit, named, says):
    """A Dense folder without its config.json loaded with a Tanh the author may not have used
    (sentence-transformers cannot load it); the others were an AttributeError, a TypeError, or
    'invalid literal for int()' naming no file."""
    folder = broken(good_folder, tmp_path / "m", edit)
    with pytest.raises(ValueError) as caught:
        Engine.from_pretrained(folder)
    assert str(folder / named) in str(caught.value)
    assert says in str(caught.value)


def test_the_dense_module_these_break_loads_whole(good_folder, tmp_path):
    config = {"in_features": 32, "out_features": 8, "bias": False, "activation_function": IDENTITY}
    engine = Engine.from_pretrained(broken(good_folder, tmp_path / "m", with_dense(config)))
    assert engine.embed(["a text"]).embeddings.shape == (1, 8)


def transformer_in(subfolder: str) -> Callable[[Path], None]:
    """The layout sentence-transformers 1.x saved: the transformer in a module folder."""

    def edit(folder: Path) -> None:
        (folder / subfolder).mkdir()
        for name in ("config.json", "model.safetensors", *TOKENIZER_FILES):
            (folder / name).rename(folder / subfolder / name)
        modules = [{**MODULES[0], "path": subfolder}, *MODULES[1:]]
        (folder / "modules.json").write_text(json.dumps(modules))

    return edit


def shard_missing(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    index = {
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
        }
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


NO_WEIGHTS = [
    (
        "Transformer in 0_BERT",
        transformer_in("0_BERT"),
        "modules.json puts its Transformer in 0_BERT/",
    ),
    ("a shard missing", shard_missing, "names shards that are not there: ['model-00002-of-00002"),
]


@pytest.mark.parametrize(
    ("edit", "says"), [c[1:] for c in NO_WEIGHTS], ids=[c[0] for c in NO_WEIGHTS]
)
def test_a_folder_without_weights_says_what_it_has_instead(good_folder, tmp_path, edit, says):
    """Each said only "has no model.onnx, onnx/model.onnx or model.safetensors (single or
    sharded)", though sentence-transformers loads the first and the second names the shard."""
    folder = broken(good_folder, tmp_path / "m", edit)
    with pytest.raises(FileNotFoundError) as caught:
        Engine.from_pretrained(folder)
    assert str(caught.value).startswith(f"{folder} has no model.onnx"), caught.value
    assert says in str(caught.value)


# A compiled graph damaged in the cache from outside (embedserve's own writes are atomic).


def _cut_cached_graphs(cache: Path) -> list[Path]:
    """Every cached graph cut to a third, as a full disk or another tool would leave it."""
    graphs = sorted((cache / "compiled").glob("*/model.onnx"))
    for graph in graphs:
        with graph.open("r+b") as f:
            f.truncate(graph.stat().st_size // 3)
    return graphs


def test_a_cut_cached_graph_is_built_again(good_folder, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("EMBEDSERVE_CACHE", str(tmp_path / "cache"))
    want = Engine.from_pretrained(good_folder).embed(["a text"]).embeddings
    # The compiled graph and the fused copy made from it: each is read by the next step.
    graphs = _cut_cached_graphs(tmp_path / "cache")
    assert len(graphs) >= 2
    with caplog.at_level("WARNING", logger="embedserve.models.cache"):
        again = Engine.from_pretrained(good_folder).embed(["a text"]).embeddings
    assert (again == want).all()
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert all(str(graph) in warned for graph in graphs), warned


def test_the_cli_builds_a_cut_cached_graph_again(good_folder, tmp_path):
    env = {**os.environ, "EMBEDSERVE_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "embedserve.cli", "embed", "--model", str(good_folder), "a"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    _cut_cached_graphs(tmp_path / "cache")
    again = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert "is damaged" in again.stderr
    assert json.loads(again.stdout) == json.loads(first.stdout)
