"""embed-file in process: every input format, folders and globs, output types, bad rows."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from embedserve.corpus import EMBEDDING_TYPES, CorpusError, EmbedFileOptions, embed_file
from embedserve.corpus.output import OutputError
from embedserve.corpus.pipeline import locate, plan
from embedserve.corpus.readers import Columns, count_rows, find_inputs, read_rows
from embedserve.quantization import BYTE_ENCODINGS, BYTE_RULE, dtype, width

from tests.corpus.conftest import read_output, write_csv, write_jsonl, write_parquet
from tests.support import cosines


def _records(texts: list[str], first: int) -> list[dict]:
    return [{"id": f"doc-{first + i}", "text": t} for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, reference) -> Path:
    """The 200 reference texts split over one file of each format (text lines can't hold '\\n')."""
    texts = reference["texts"]
    root = tmp_path_factory.mktemp("corpus")
    assert not any("\n" in t for t in texts[100:150])
    write_jsonl(root / "a.jsonl", _records(texts[0:50], 0))
    write_csv(root / "b.csv", _records(texts[50:100], 50))
    (root / "c.txt").write_text("\n".join(texts[100:150]) + "\n", encoding="utf-8")
    write_parquet(root / "d.parquet", _records(texts[150:200], 150))
    return root


def test_folder_of_every_format_matches_sentence_transformers(corpus, engine, reference, tmp_path):
    totals = embed_file(
        corpus,
        tmp_path / "out",
        EmbedFileOptions(batch_texts=32, rows_per_part=64, quiet=True),
        engine=engine,
        log=None,
    )
    rows, ids, vectors = read_output(tmp_path / "out")
    assert rows == list(range(200))
    # Plain text has no ids.
    assert ids == [f"doc-{i}" for i in range(100)] + [None] * 50 + [
        f"doc-{i}" for i in range(150, 200)
    ]
    assert vectors.dtype == np.float32 and vectors.shape == (200, 384)
    assert cosines(vectors, reference["normalized"]).min() >= 0.99999
    assert totals["rows"] == 200 and totals["skipped"] == 0 and totals["parts"] == 4
    assert totals["tokens"] == sum(reference["tokens_truncated"])
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["complete"] is True
    assert [(p["start"], p["end"], p["rows"]) for p in manifest["parts"]] == [
        (0, 64, 64),
        (64, 128, 64),
        (128, 192, 64),
        (192, 200, 8),
    ]
    schema = pq.read_schema(tmp_path / "out" / "part-000000.parquet")
    assert schema.field("embedding").type == pa.list_(pa.float32(), 384)
    assert schema.names == ["id", "row", "embedding"]


@pytest.mark.parametrize("name", ["a.jsonl", "b.csv", "c.txt", "d.parquet"])
def test_each_format_reads_its_rows_and_counts_agree(corpus, reference, name):
    first = "abcd".index(name[0]) * 50
    [file] = find_inputs(corpus / name)
    rows = list(read_rows(file, Columns()))
    assert [text for _, text, _ in rows] == reference["texts"][first : first + 50]
    assert count_rows(file) == 50
    # Resuming skips rows without parsing them: None for each, then the rest as usual.
    assert list(read_rows(file, Columns(), skip=20)) == [None] * 20 + rows[20:]


def test_glob_picks_files_in_name_order(corpus, engine, reference, tmp_path):
    assert [f.path.name for f in find_inputs(str(corpus / "[bd].*"))] == ["b.csv", "d.parquet"]
    assert [f.path.name for f in find_inputs(str(corpus / "**" / "*.jsonl"))] == ["a.jsonl"]


def test_stored_types_dimensions_and_precision(engine, reference, st_quantize, tmp_path):
    # The first 20 texts, and 75-86: text 80's dimension 334 sits on an int8 bin edge.
    picked = [*range(20), *range(75, 87)]
    ref = reference["normalized"][picked]
    write_jsonl(tmp_path / "small.jsonl", _records([reference["texts"][i] for i in picked], 0))
    outputs = {}
    for kind in EMBEDDING_TYPES:
        out = tmp_path / kind
        embed_file(
            tmp_path / "small.jsonl",
            out,
            EmbedFileOptions(embedding_type=kind, quiet=True),
            engine=engine,
            log=None,
        )
        outputs[kind] = read_output(out)[2]
        stored = pq.read_schema(out / "part-000000.parquet").field("embedding").type
        assert stored == pa.list_(pa.from_numpy_dtype(dtype(kind)), width(kind, 384))
        assert outputs[kind].dtype == dtype(kind)
        assert outputs[kind].shape == (len(picked), width(kind, 384))
    floats = outputs["float32"]
    assert cosines(floats, ref).min() >= 0.99999
    np.testing.assert_array_equal(outputs["float16"], floats.astype(np.float16))
    # Same batches, same vectors: each byte type is sentence-transformers' bytes for them.
    for kind in BYTE_ENCODINGS:
        np.testing.assert_array_equal(outputs[kind], st_quantize(floats, kind), err_msg=kind)
    # The manifest says which rule made the bytes, so a resume under another one is refused.
    manifest = json.loads((tmp_path / "int8" / "_manifest.json").read_text())
    assert manifest["options"]["byte_rule"] == BYTE_RULE
    assert (
        "byte_rule"
        not in json.loads((tmp_path / "float16" / "_manifest.json").read_text())["options"]
    )
    old = manifest | {"options": {k: v for k, v in manifest["options"].items() if k != "byte_rule"}}
    (tmp_path / "int8" / "_manifest.json").write_text(json.dumps(old))
    with pytest.raises(OutputError, match="byte_rule: not recorded then, 'sentence-transformers"):
        embed_file(
            tmp_path / "small.jsonl",
            tmp_path / "int8",
            EmbedFileOptions(embedding_type="int8", quiet=True),
            engine=engine,
            log=None,
        )

    cut = tmp_path / "cut"
    embed_file(
        tmp_path / "small.jsonl",
        cut,
        EmbedFileOptions(dimensions=64, quiet=True),
        engine=engine,
        log=None,
    )
    vectors = read_output(cut)[2]
    assert vectors.shape == (len(picked), 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert cosines(vectors, ref[:, :64]).min() >= 0.99999


def test_bad_rows_are_skipped_and_reported_by_number(engine, tmp_path, capsys):
    lines = [
        b'{"id": "a", "text": "a good row"}',
        b'{"id": "b"}',  # 1: no text field
        b'{"id": "c", "text": "   "}',  # 2: empty
        b'{"id": "d", "text": "caf\xe9 au lait"}',  # 3: Latin-1 byte, not UTF-8
        b'{"id": "e", "text": 12}',  # 4: not a string
        b"not json at all",  # 5
        b'["a", "list"]',  # 6: not an object
        b"",  # 7: blank line
        b'{"id": "i", "text": "lone \\ud800 surrogate"}',  # 8: not encodable as UTF-8
        b'{"id": "j", "text": "another good row"}',
    ]
    (tmp_path / "bad.jsonl").write_bytes(b"\n".join(lines))  # and no final newline
    totals = embed_file(tmp_path / "bad.jsonl", tmp_path / "out", EmbedFileOptions(), engine=engine)
    rows, ids, _ = read_output(tmp_path / "out")
    assert rows == [0, 9] and ids == ["a", "j"]
    reasons = dict(totals["skipped_rows"])
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert reasons[1] == "no 'text' field"
    assert reasons[2] == "empty text"
    assert reasons[3].startswith("not valid UTF-8")
    assert reasons[4] == "'text' is an int, not a string"
    assert reasons[5].startswith("not valid JSON")
    assert reasons[6] == "not a JSON object (an array)"
    assert reasons[7] == "empty line"
    assert reasons[8].startswith("not valid UTF-8")
    captured = capsys.readouterr()
    assert "skipped 8" in captured.out
    assert f"skipped input row 3 ({tmp_path / 'bad.jsonl'}, line 4): not valid UTF-8" in (
        captured.out
    )
    # The progress bar: rows done of the total, docs/s, ETA, tokens/s and the skipped count.
    assert "10/10 [" in captured.err and "doc/s" in captured.err
    assert re.search(r"\d+ tok/s, skipped 8", captured.err)

    with pytest.raises(CorpusError, match=r"row 1 .*no 'text' field"):
        embed_file(
            tmp_path / "bad.jsonl",
            tmp_path / "fail",
            EmbedFileOptions(on_error="fail", quiet=True),
            engine=engine,
            log=None,
        )


def test_a_bad_rows_reason_says_null_and_json_types_not_python_ones(tmp_path):
    """`{"text": null}` and a Parquet null were reported as "no 'text' field", though the field
    is there; a line that is JSON but not an object as "(a NoneType)", "(a str)", "(a dict)"."""
    lines = ['{"text": null}', "null", '"a string"', "[1]", "3.5", "true", '{"id": 1}']
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    write_parquet(tmp_path / "b.parquet", [{"id": 6, "text": None}])
    reasons = [
        reason for file in find_inputs(tmp_path) for _, _, reason in read_rows(file, Columns())
    ]
    assert reasons == [
        "'text' is null",
        "not a JSON object (null)",
        "not a JSON object (a string)",
        "not a JSON object (an array)",
        "not a JSON object (a number)",
        "not a JSON object (true or false)",
        "no 'text' field",
        "'text' is null",
    ]


def test_bad_rows_in_csv_and_parquet(engine, tmp_path):
    (tmp_path / "x.csv").write_bytes(b'id,text\n1,fine\n2,\n3,bad \xff byte\n4\n5,"multi\nline"\n')
    write_parquet(tmp_path / "y.parquet", [{"id": 6, "text": "ok"}, {"id": 7, "text": None}])
    totals = embed_file(
        tmp_path, tmp_path / "out", EmbedFileOptions(quiet=True), engine=engine, log=None
    )
    rows, ids, _ = read_output(tmp_path / "out")
    assert rows == [0, 4, 5] and ids == ["1", "5", "6"]
    assert totals["skipped_rows"] == [
        (1, "empty text"),
        (2, "not valid UTF-8 (character 4)"),
        (3, "no 'text' field"),
        (6, "'text' is null"),
    ]


def test_missing_column_and_unusable_output(engine, tmp_path):
    write_csv(tmp_path / "x.csv", [{"id": 1, "body": "x"}], fields=("id", "body"))
    with pytest.raises(CorpusError, match=r"no column 'text' \(columns: id, body\)"):
        embed_file(
            tmp_path / "x.csv",
            tmp_path / "out",
            EmbedFileOptions(quiet=True),
            engine=engine,
            log=None,
        )
    embed_file(
        tmp_path / "x.csv",
        tmp_path / "out2",
        EmbedFileOptions(text_column="body", quiet=True),
        engine=engine,
        log=None,
    )
    assert read_output(tmp_path / "out2")[:2] == ([0], ["1"])
    # Resuming with other options would mix two kinds of vectors: refused, with what changed.
    with pytest.raises(OutputError, match="dimensions: None then, 8 now"):
        embed_file(
            tmp_path / "x.csv",
            tmp_path / "out2",
            EmbedFileOptions(text_column="body", dimensions=8, quiet=True),
            engine=engine,
            log=None,
        )
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        embed_file(
            tmp_path / "x.csv",
            tmp_path / "other",
            EmbedFileOptions(quiet=True),
            engine=engine,
            log=None,
        )
    with pytest.raises(CorpusError, match="no such file"):
        find_inputs(tmp_path / "nope.jsonl")


def test_command_line_errors_are_one_line_and_exit_1(tmp_path, capsys):
    from embedserve.cli import main

    assert main(["embed-file", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")]) == 1
    assert "embedserve: error:" in capsys.readouterr().err
    (tmp_path / "notes.md").write_text("x")
    assert main(["embed-file", str(tmp_path / "notes.md"), "--out", str(tmp_path / "o")]) == 1
    assert "notes.md: unknown format" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["embed-file", "x.jsonl", "--out", "o", "--precision", "fp8"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'fp8'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # refused before any model loads
        main(["embed-file", "x.jsonl", "--out", "o", "--cache-dir", str(tmp_path / "notes.md")])
    assert exit_info.value.code == 2
    assert "argument --cache-dir:" in capsys.readouterr().err


def test_a_run_that_skips_every_row_exits_1_naming_text_column(tmp_path, capsys):
    """A --text-column that is not the field of a JSONL's texts skipped every row and exited 0
    with an empty output (a CSV's or Parquet's missing column is refused): `embed-file ... &&
    upload` went on with nothing."""
    from embedserve.cli import main

    write_jsonl(tmp_path / "a.jsonl", [{"body": "one"}, {"body": "two"}])
    command = ["embed-file", str(tmp_path / "a.jsonl"), "--out", str(tmp_path / "o"), "--quiet"]
    assert main(command) == 1
    captured = capsys.readouterr()
    assert "skipped input row 0" in captured.out  # the summary still lists them
    assert captured.err.splitlines() == [
        (
            f"embedserve: error: {tmp_path / 'a.jsonl'}: none of its 2 rows was embedded (all "
            "skipped, as listed above); is --text-column 'text' the field that holds the texts?"
        )
    ]
    fixed = [*command[:2], "--out", str(tmp_path / "o2"), "--text-column", "body"]
    assert main(fixed) == 0
    # Rows skipped for what they hold say so, without the hint.
    write_jsonl(tmp_path / "b.jsonl", [{"text": " "}])
    assert main(["embed-file", str(tmp_path / "b.jsonl"), "--out", str(tmp_path / "p")]) == 1
    assert capsys.readouterr().err.endswith(
        "none of its 1 rows was embedded (all skipped, as listed above)\n"
    )


BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("a.jsonl", BOM + b'{"id": "r0", "text": "first"}\r\n{"id": "r1", "text": "second"}\r\n'),
        ("b.csv", BOM + b"id,text\r\nr0,first\r\nr1,second\r\n"),
        ("c.csv", BOM + b"text,id\r\nfirst,r0\r\nsecond,r1\r\n"),  # the BOM before the text column
        ("d.txt", BOM + b"first\r\nsecond"),
    ],
    ids=["jsonl", "csv", "csv-text-first", "text"],
)
def test_a_byte_order_mark_is_not_part_of_the_first_row(tmp_path, name, data):
    """Files saved by Windows tools often start with a UTF-8 BOM: it was taken for part of the
    first line (JSONL: row 0 skipped as not JSON; text: U+FEFF embedded) or of the first CSV
    header (its column not found: ids silently null, or no text column)."""
    (tmp_path / name).write_bytes(data)
    [file] = find_inputs(tmp_path / name)
    rows = list(read_rows(file, Columns()))
    ident = [None, None] if name.endswith(".txt") else ["r0", "r1"]
    assert rows == [(ident[0], "first", None), (ident[1], "second", None)]
    assert count_rows(file) == 2
    assert list(read_rows(file, Columns(), skip=1)) == [None, rows[1]]


@pytest.mark.parametrize(
    ("name", "text", "encoding", "says"),
    [
        ("a.txt", "first\nsecond\n", "utf-16-le", "UTF-16"),
        ("b.jsonl", '{"text": "first"}\n', "utf-16-be", "UTF-16"),
        ("c.csv", "id,text\nr0,first\n", "utf-16-le", "UTF-16"),
        ("d.txt", "first\n", "utf-32-le", "UTF-32"),
    ],
    ids=["text", "jsonl-big-endian", "csv", "utf-32"],
)
def test_a_utf16_or_utf32_file_is_refused_by_name_before_the_model_loads(
    tmp_path, name, text, encoding, says
):
    """Windows tools save "Unicode" text as UTF-16 with a byte order mark. Split at b"\\n" as
    UTF-8, a UTF-16 text file's lines after the first decoded (NUL bytes between the letters)
    and were embedded as garbage: `embedded 2 rows ... skipped 1` and exit 0; a JSONL's rows
    were all skipped as not JSON; a CSV's header read as `\\udcff\\udcfei d ,  t e x t`."""
    (tmp_path / name).write_bytes(("\ufeff" + text).encode(encoding))
    with pytest.raises(CorpusError, match=rf"{name}: .*{says}.*read as UTF-8.*iconv"):
        # No engine: refused while the inputs are found, before any model would load.
        embed_file(tmp_path / name, tmp_path / "out", EmbedFileOptions(quiet=True), log=None)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("name", "data"),
    [("a.txt", b"first\rsecond\rthird\r"), ("b.jsonl", b'{"text": "a"}\r{"text": "b"}\r')],
    ids=["text", "jsonl"],
)
def test_lone_cr_line_ends_are_refused_not_read_as_one_line(tmp_path, name, data):
    """Classic Mac line ends (a lone \\r; old Excel and TextEdit exports) made a text file one
    row, 'first\\rsecond\\rthird', embedded as one text with exit 0, and a JSONL's rows one
    row skipped as not JSON. (A CSV's are read right: the csv module ends records at \\r.)"""
    (tmp_path / name).write_bytes(data)
    with pytest.raises(CorpusError, match=rf"{name}: its lines end in a lone CR .*tr"):
        find_inputs(tmp_path / name)
    (tmp_path / "c.csv").write_bytes(b"id,text\rr0,first\rr1,second\r")
    [csv_file] = find_inputs(tmp_path / "c.csv")
    assert list(read_rows(csv_file, Columns())) == [("r0", "first", None), ("r1", "second", None)]


def test_a_parquet_path_that_is_not_utf8_is_refused_by_name(tmp_path):
    """pyarrow takes a path as UTF-8: a Parquet input, or an --out, whose name holds other
    bytes (an old archive's Latin-1 `caf\\xe9`) failed with "'utf-8' codec can't encode
    character '\\udce9' in position 8: surrogates not allowed", naming no file, and the --out
    one only after the model had loaded."""
    latin1 = os.fsdecode(b"caf\xe9")
    write_parquet(tmp_path / "utf8.parquet", [{"text": "one"}])
    (tmp_path / "utf8.parquet").rename(tmp_path / f"{latin1}.parquet")
    with pytest.raises(CorpusError, match=r"caf\udce9.parquet: .*not UTF-8.*rename"):
        find_inputs(tmp_path)
    write_jsonl(tmp_path / "in.jsonl", [{"text": "one"}])
    with pytest.raises(OutputError, match=r"caf\udce9: .*not UTF-8.*another --out"):
        # No engine: refused before any model would load.
        embed_file(tmp_path / "in.jsonl", tmp_path / latin1, EmbedFileOptions(), log=None)


def test_a_fifo_is_refused_as_not_a_regular_file_not_as_missing(tmp_path):
    """`embed-file <(zcat docs.jsonl.gz) ...` or a named pipe was refused as "no such file or
    directory", though it exists: embed-file reads a file twice (it counts the rows first),
    which a pipe cannot give."""
    fifo = tmp_path / "docs.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(CorpusError, match=rf"{fifo}: not a regular file .*reads its input twice"):
        find_inputs(fifo)
    # `cat docs.jsonl | embed-file - ...`: stdin is a pipe too (it said "-: no such file").
    with pytest.raises(CorpusError, match=r"^-: stdin is not a regular file .*reads its input"):
        find_inputs("-")


def test_a_folder_skips_hidden_files_and_the_output_inside_it(engine, tmp_path):
    """A folder walk took hidden files too: a notebook's checkpoint copies (.ipynb_checkpoints),
    macOS's AppleDouble `._x.parquet` (not Parquet: the job failed). And an --out inside the
    input folder was read back as input: the same command, run again, was refused."""
    corpus = tmp_path / "corpus"
    (corpus / ".ipynb_checkpoints").mkdir(parents=True)
    (corpus / "_tmp").mkdir()
    write_jsonl(corpus / "a.jsonl", [{"id": "a", "text": "alpha"}])
    write_jsonl(corpus / ".ipynb_checkpoints" / "a-checkpoint.jsonl", [{"id": "c", "text": "x"}])
    write_jsonl(corpus / "_tmp" / "part-0.jsonl", [{"id": "t", "text": "x"}])
    (corpus / "._b.parquet").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (corpus / ".notes.txt").write_text("hidden\n")
    write_csv(corpus / "b.csv", [{"id": "b", "text": "beta"}])
    assert [f.path.name for f in find_inputs(corpus)] == ["a.jsonl", "b.csv"]

    options = EmbedFileOptions(quiet=True)
    out = corpus / "emb"
    embed_file(corpus, out, options, engine=engine, log=None)
    assert read_output(out)[:2] == ([0, 1], ["a", "b"])
    again = embed_file(corpus, out, options, engine=engine, log=None)  # complete: nothing to do
    assert again["rows"] == 2 and again["this_run_rows"] == 0
    # A glob that matches the output's parts leaves them out too (a glob is taken as written:
    # `_tmp` is not a hidden name to it).
    found = find_inputs(f"{corpus}/**/*", exclude=out)
    assert [f.path.name for f in found] == ["part-0.jsonl", "a.jsonl", "b.csv"]


def test_an_unreadable_parquet_file_is_named_and_the_id_may_be_the_text(tmp_path):
    """pyarrow's own error ("Parquet magic bytes not found in footer") did not say which of a
    folder's files it was; and --id-column naming the text column failed on an index error."""
    write_parquet(tmp_path / "a.parquet", [{"text": "one"}, {"text": "two"}])
    (tmp_path / "b.parquet").write_bytes(b"PAR1 cut short by a failed copy")
    files = find_inputs(tmp_path)
    assert list(read_rows(files[0], Columns("text", "text"))) == [
        ("one", "one", None),
        ("two", "two", None),
    ]
    with pytest.raises(CorpusError, match=r"b\.parquet: not a readable Parquet file \(.*magic"):
        count_rows(files[1])
    with pytest.raises(CorpusError, match=r"b\.parquet: not a readable Parquet file"):
        list(read_rows(files[1], Columns()))


def test_a_csv_quote_never_closed_is_an_error_not_one_row_to_the_end(tmp_path):
    """A field opening a quote it never closes (`"12 inch screen`) made the csv module read the
    rest of the file, every later row, into that one field: rows vanished without a word."""
    path = tmp_path / "x.csv"
    path.write_bytes(b'id,text\n1,fine\n2,"12 inch screen\n3,next row\n4,"a ""quoted"" one"\n')
    [file] = find_inputs(path)
    with pytest.raises(CorpusError, match=r"x\.csv: line 3: a quoted field runs over 3 lines"):
        count_rows(file)
    path.write_bytes(b'id,text\n1,fine\n2,"12 inch screen\n3,next row\n')  # no quote after it
    with pytest.raises(CorpusError, match=r"line 3: .* over 2 lines .*\(unexpected end of data\)"):
        count_rows(file)
    # Closed quotes, even across lines, and sloppy ones the csv module reads, are fine.
    path.write_bytes(b'id,text\n1,"two\nlines"\n2,"x"y\n3,last')
    assert count_rows(file) == 3
    assert [t for _, t, _ in read_rows(file, Columns())] == ["two\nlines", "xy", "last"]


def test_an_unusable_out_is_refused_before_the_model_loads(tmp_path):
    """--out a file, a folder of something else, a run with other options or an unreadable
    manifest was refused only after the model had loaded (minutes for a large one): here the
    model does not exist, and the refusal is still the output's."""
    write_jsonl(tmp_path / "in.jsonl", [{"text": "one"}])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "_manifest.json").write_text('{"options": ')
    absent = EmbedFileOptions(model=str(tmp_path / "no-such-model"), quiet=True)
    for out, why in [
        ("in.jsonl", r"in\.jsonl is a file: --out names a folder"),
        ("other", "not empty"),
        ("broken", r"_manifest\.json is not a manifest this embedserve can read"),
    ]:
        with pytest.raises(OutputError, match=why):
            embed_file(tmp_path / "in.jsonl", tmp_path / out, absent, log=None)
    assert (tmp_path / "in.jsonl").read_text() == '{"text": "one"}\n'


def test_ids_that_are_not_strings_keep_their_source_spelling(tmp_path):
    """Ids were Python's str() of the parsed value: JSON `true` became "True", an object
    "{'a': 1}", and a Parquet binary id "b'k1'"."""
    (tmp_path / "a.jsonl").write_text(
        '{"id": 7, "text": "a"}\n{"id": true, "text": "b"}\n{"id": {"a": 1}, "text": "c"}\n'
        '{"id": [1, "x"], "text": "d"}\n{"id": 2.5, "text": "e"}\n{"id": "s", "text": "f"}\n'
    )
    [file] = find_inputs(tmp_path / "a.jsonl")
    assert [ident for ident, _, _ in read_rows(file, Columns())] == [
        "7",
        "true",
        '{"a": 1}',
        '[1, "x"]',
        "2.5",
        "s",
    ]
    table = pa.table({"id": pa.array([b"k1", b"\xff"], pa.binary()), "text": ["a", "b"]})
    pq.write_table(table, tmp_path / "b.parquet")
    [file] = find_inputs(tmp_path / "b.parquet")
    assert [ident for ident, _, _ in read_rows(file, Columns())] == ["k1", "\ufffd"]


@pytest.mark.parametrize(
    "name, data", [("a.jsonl", b""), ("b.csv", b"id,text\r\n"), ("c.txt", b""), ("d.parquet", None)]
)
def test_an_input_of_no_rows_reads_as_an_empty_table_with_the_columns(engine, tmp_path, name, data):
    """An empty file (a CSV of its header alone) left OUT with a manifest and no part:
    `read_table(OUT)` gave a table of no columns, where every other run has id, row, embedding."""
    source = tmp_path / name
    if data is None:
        pq.write_table(
            pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}), source
        )
    else:
        source.write_bytes(data)
    out = tmp_path / "out"
    options = EmbedFileOptions(dimensions=64, embedding_type="int8", quiet=True)
    totals = embed_file(source, out, options, engine=engine, log=None)
    assert totals["rows"] == 0 and totals["skipped"] == 0 and totals["parts"] == 1
    table = pq.read_table(out)
    assert table.num_rows == 0
    assert table.schema.names == ["id", "row", "embedding"]
    assert table.schema.field("embedding").type == pa.list_(pa.int8(), 64)
    # The same command again finds it complete; rows added since start it over (nothing to mix).
    assert embed_file(source, out, options, engine=engine, log=None)["this_run_rows"] == 0
    if name == "a.jsonl":
        write_jsonl(source, [{"id": "x", "text": "now a row"}])
        assert embed_file(source, out, options, engine=engine, log=None)["rows"] == 1
        rows, ids, vectors = read_output(out)
        assert rows == [0] and ids == ["x"] and vectors.shape == (1, 64)


def test_the_summary_names_each_skipped_row_as_on_error_fail_does(engine, tmp_path, capsys):
    """The end-of-run list said "skipped row 4: empty text", a number across all the files;
    now each skipped row is worded as `--on-error fail` words it, file and line, on a run that
    is already complete too (which reads no rows)."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"text": "one"}\n{"id": 2}\n')
    (folder / "b.csv").write_bytes(b'id,text\n1,"two\nlines"\n2,fine\n3,\n')
    for _ in range(2):  # a run, then the same run again, already complete
        embed_file(folder, tmp_path / "out", EmbedFileOptions(quiet=True), engine=engine)
        out = capsys.readouterr().out
        assert f"skipped input row 1 ({folder / 'a.jsonl'}, line 2): no 'text' field" in out, out
        assert f"skipped input row 4 ({folder / 'b.csv'}, line 5): empty text" in out, out
    assert "(already complete)" in out


def test_on_error_fail_names_the_line_an_editor_shows(engine, tmp_path):
    """The message said "row 1 of the file", counting from 0, for what an editor shows on line 2
    (and a CSV's header and its records over several lines moved the line further)."""
    folder = tmp_path / "in"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [{"text": "one"}, {"text": "two"}])
    (folder / "b.csv").write_bytes(b'id,text\n1,"two\nlines"\n2,fine\n3,\n')
    options = EmbedFileOptions(on_error="fail", quiet=True)

    def failure(source: Path) -> str:
        with pytest.raises(CorpusError) as caught:
            embed_file(source, tmp_path / "out", options, engine=engine, log=None)
        return str(caught.value)

    # Input row 4 (the output's `row`), the CSV's third record: line 5 after the header and
    # the record over two lines.
    message = failure(folder)
    assert f"input row 4 ({folder / 'b.csv'}, line 5): empty text" in message
    (folder / "b.csv").unlink()
    (folder / "a.jsonl").write_text('{"text": "one"}\n{"id": 2}\n')
    assert f"input row 1 ({folder / 'a.jsonl'}, line 2): no 'text' field" in failure(folder)
    (folder / "a.jsonl").unlink()
    (folder / "c.txt").write_text("one\n\nthree\n")
    assert f"input row 1 ({folder / 'c.txt'}, line 2): empty text" in failure(folder)
    (folder / "c.txt").unlink()
    write_parquet(folder / "d.parquet", [{"text": "ok"}, {"text": None}])
    message = failure(folder)
    assert f"input row 1 ({folder / 'd.parquet'}, row 1 of the file, counting from 0)" in message


def test_an_input_row_is_located_in_its_file_past_files_of_no_rows(tmp_path):
    """`--server` refusals name the row's file and line from the run's plan; an empty file
    starts where the next one does, and must not be named for its rows."""
    write_jsonl(tmp_path / "a.jsonl", [{"text": "one"}, {"text": "two"}])
    (tmp_path / "b.jsonl").write_bytes(b"")
    (tmp_path / "c.csv").write_bytes(b"id,text\n1,x\n2,y\n")
    files = find_inputs(tmp_path)
    slices = plan(files, [count_rows(f) for f in files], 0)
    assert locate(slices, 1) == f"{tmp_path / 'a.jsonl'}, line 2"
    assert locate(slices, 3) == f"{tmp_path / 'c.csv'}, line 3"
