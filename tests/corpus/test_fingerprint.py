"""What a resumed embed-file run must share with the run that started its output (the manifest's
options): every setting that changes a row's vector or where the parts end, and the input files
as they were. A resume that differs is refused, with what differs."""

from __future__ import annotations

import json
import os
from dataclasses import fields

import onnxruntime as ort
import pytest
from embedserve.corpus import EmbedFileOptions, embed_file
from embedserve.corpus.output import MANIFEST, OutputError
from embedserve.corpus.pipeline import MODEL_SETTINGS, RUN_SETTINGS
from embedserve.engine import Engine
from embedserve.loading import LoadOptions, plan_load
from embedserve.precision import CUDA_BOUND, this_cpus_precision
from embedserve.runtime import providers as providers_module
from embedserve.runtime.providers import CPU, CUDA

from tests.corpus.conftest import write_jsonl

TEXTS = ["the first row", "a second one", "and a third"]


def _embed(source, out, engine, load: LoadOptions | None = None, **changes) -> dict:
    options = EmbedFileOptions(quiet=True, load=load or LoadOptions(), **changes)
    return embed_file(source, out, options, engine=engine, log=None)


@pytest.fixture
def done(tmp_path, engine):
    """A small corpus, embedded to the end with the default settings."""
    source = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS])
    _embed(source, tmp_path / "out", engine)
    return source, tmp_path / "out"


def test_every_load_setting_is_either_recorded_or_said_not_to_matter():
    names = [f.name for f in fields(LoadOptions)]
    assert sorted([*MODEL_SETTINGS, *RUN_SETTINGS]) == sorted(names)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tokenizer_mode": "as-saved"}, "tokenizer_mode: 'transformers' then, 'as-saved' now"),
        ({"max_length": 16}, "max_length: None then, 16 now"),
        ({"tokenizer": "/elsewhere"}, "tokenizer: None then, '/elsewhere' now"),
        ({"compile": True}, "compile: False then, True now"),
        ({"runtime": "openvino"}, "runtime: 'auto' then, 'openvino' now"),
        ({"precision": "int8"}, "precision: 'fp32' then, 'int8' now"),
    ],
)
def test_a_resume_with_a_setting_that_changes_the_vectors_is_refused(
    done, engine, changes, message
):
    source, out = done
    with pytest.raises(OutputError, match=message):
        _embed(source, out, engine, LoadOptions(**changes))


def test_a_resume_with_other_parts_is_refused(done, engine):
    source, out = done
    with pytest.raises(OutputError, match="rows_per_part: 32768 then, 2 now"):
        _embed(source, out, engine, rows_per_part=2)


def test_a_resume_may_run_elsewhere_and_faster(done, engine):
    source, out = done
    faster = LoadOptions(
        providers="cpu",
        intra_op_threads=1,
        max_batch_tokens=64,
        bulk_session="off",
        cache_bytes=0,
        runtime="auto",
        name="mini",
    )
    totals = _embed(source, out, engine, faster, batch_texts=2)
    assert totals["this_run_rows"] == 0 and totals["rows"] == len(TEXTS)


def test_an_input_edited_to_the_same_size_is_refused(done, engine):
    source, out = done
    before = source.stat()
    source.write_text(source.read_text().replace("first", "fir5t"))
    assert source.stat().st_size == before.st_size
    # Timestamps come from a coarse clock (one tick can hold both writes); a person's edit comes
    # later than that.
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    with pytest.raises(OutputError, match=r"in\.jsonl was modified \(same size"):
        _embed(source, out, engine)
    source.write_text(source.read_text() + '{"text": "one more"}\n')
    grown = rf"in\.jsonl changed size \({before.st_size} bytes then, {before.st_size + 21} now\)"
    with pytest.raises(OutputError, match=grown):
        _embed(source, out, engine)


def test_a_run_recorded_by_an_older_embedserve_is_refused_with_what_it_lacks(done, engine):
    source, out = done
    manifest = json.loads((out / MANIFEST).read_text())
    options = manifest["options"]
    # What the previous version recorded: no load settings but the precision, no part size,
    # and each input by path and size alone.
    for name in ("runtime", "compile", "tokenizer", "tokenizer_mode", "max_length"):
        del options[name]
    del options["rows_per_part"]
    options["inputs"] = [entry[:2] for entry in options["inputs"]]
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(OutputError) as refused:
        _embed(source, out, engine)
    assert (
        "(compile: not recorded then, False now; "
        f"inputs: {source.resolve()} was recorded by size alone (no modification time); "
        "max_length: not recorded then, None now; rows_per_part: not recorded then, 32768 now; "
        "runtime: not recorded then, 'auto' now; tokenizer: not recorded then, None now; "
        "tokenizer_mode: not recorded then, 'transformers' now); use another --out"
    ) in str(refused.value)


@pytest.mark.parametrize("providers", ["cuda", "cpu"])
def test_auto_is_the_precision_the_model_s_plan_runs(minilm_dir, monkeypatch, providers):
    """`--precision auto` is recorded as what the engine will run: on CUDA the GPU's default
    (fp16), as `serve` and the library choose it, not this CPU's rule."""
    # An onnxruntime that offers CUDA, and a device: planning opens nothing on it.
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(providers_module, "cuda_device_present", lambda: True)
    load = LoadOptions(precision="auto", providers=providers)
    planned = plan_load(minilm_dir, load, Engine.runs)
    recorded = EmbedFileOptions(load=load).fingerprint([])["precision"]
    assert recorded == planned.precision.name
    if providers == "cuda":
        assert (recorded, planned.runtime) == ("fp16", CUDA_BOUND)
    else:
        assert recorded == this_cpus_precision()
