"""embed-file killed with SIGKILL at random rows, then resumed: every row exactly once, in order."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from embedserve.corpus import EmbedFileOptions, embed_file
from embedserve.corpus.output import MANIFEST, Manifest, OutputError
from embedserve.corpus.pipeline import chunks_of, plan
from embedserve.corpus.readers import Columns, CorpusError, count_rows, find_inputs

from tests.corpus.conftest import read_output, write_jsonl

BATCH, PART = 8, 24
CLI = [sys.executable, "-m", "embedserve.cli", "embed-file"]


def _options() -> EmbedFileOptions:
    return EmbedFileOptions(batch_texts=BATCH, rows_per_part=PART, quiet=True)


def _flags() -> list[str]:
    return ["--batch-texts", str(BATCH), "--rows-per-part", str(PART), "--quiet"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, reference) -> Path:
    """240 short texts cut from the reference prose, with a bad row every 37 rows."""
    words = " ".join(reference["texts"]).split()
    rng = random.Random(7)
    records: list[dict] = []
    for i in range(240):
        start = rng.randrange(len(words) - 20)
        record = {"id": f"r{i}", "text": " ".join(words[start : start + rng.randint(3, 12)])}
        if i % 37 == 5:
            record.pop("text")
        records.append(record)
    root = tmp_path_factory.mktemp("resume")
    # Two files, so a resume may start in the second one.
    write_jsonl(root / "part1.jsonl", records[:100])
    write_jsonl(root / "part2.jsonl", records[100:])
    return root


@pytest.fixture(scope="module")
def expected(corpus, engine, tmp_path_factory):
    out = tmp_path_factory.mktemp("expected") / "out"
    totals = embed_file(corpus, out, _options(), engine=engine, log=None)
    return read_output(out), totals


def _manifest(out: Path) -> dict | None:
    try:
        return json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _assert_same(out: Path, expected) -> None:
    (rows, ids, vectors), totals = expected
    got_rows, got_ids, got_vectors = read_output(out)
    assert got_rows == rows  # every row once, in input order
    assert got_ids == ids
    np.testing.assert_allclose(got_vectors, vectors, atol=1e-5)
    manifest = _manifest(out)
    assert manifest["complete"]
    skipped = [tuple(s) for p in manifest["parts"] for s in p["skipped"]]
    assert skipped == totals["skipped_rows"]
    ends = [p["end"] for p in manifest["parts"]]
    assert [p["start"] for p in manifest["parts"]] == [0, *ends[:-1]]  # no gap, no overlap
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_at_a_random_row_then_resume(corpus, expected, engine, tmp_path, seed):
    rng = random.Random(seed)
    out = tmp_path / "out"
    parts_total = -(-len(expected[0][0]) // PART)
    # Wait for this many committed parts, then a random share of the time the last part took:
    # the kill lands anywhere in the next part or so, at the machine's own pace (three parts
    # are left, where a fixed wait could outlast the run on a fast machine). The first part is
    # not timed: it includes loading the model.
    wait_parts = rng.randrange(2, parts_total - 2)
    share = rng.uniform(0.0, 1.0)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [*CLI, str(corpus), "--out", str(out), *_flags()],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    seen: list[tuple[float, int]] = []  # (when, parts) at each change after the first part
    try:
        while time.monotonic() < deadline and process.poll() is None:
            manifest = _manifest(out)
            parts = -1 if manifest is None else len(manifest["parts"])
            if parts >= 1 and (not seen or parts > seen[-1][1]):
                seen.append((time.monotonic(), parts))
            if parts >= wait_parts and len(seen) >= 2:
                break
            time.sleep(0.01)
        (before, parts_before), (after, parts_after) = seen[-2:]
        time.sleep(share * (after - before) / (parts_after - parts_before))
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()
    killed = _manifest(out)
    assert killed is not None and not killed["complete"]
    assert len(killed["parts"]) < parts_total

    # The same command again, in this process (same code path, one model load saved).
    totals = embed_file(corpus, out, _options(), engine=engine, log=None)
    assert totals["this_run_rows"] == expected[1]["rows"] - sum(p["rows"] for p in killed["parts"])
    _assert_same(out, expected)


def test_crash_between_part_rename_and_manifest(corpus, expected, engine, tmp_path, monkeypatch):
    """The narrowest window: the part file is in place but the manifest does not list it yet."""
    out = tmp_path / "out"
    original = Manifest.add
    calls = {"n": 0}

    def crash_on_third(self, part):
        calls["n"] += 1
        if calls["n"] == 3:
            assert (self.directory / part["file"]).exists()
            raise KeyboardInterrupt  # stands for the kill: nothing after this line runs
        original(self, part)

    monkeypatch.setattr(Manifest, "add", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        embed_file(corpus, out, _options(), engine=engine, log=None)
    assert len(_manifest(out)["parts"]) == 2 and (out / "part-000002.parquet").exists()
    monkeypatch.setattr(Manifest, "add", original)
    embed_file(corpus, out, _options(), engine=engine, log=None)
    _assert_same(out, expected)

    # Run again once complete: nothing to do, nothing changes.
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    totals = embed_file(corpus, out, _options(), engine=engine, log=None)
    assert totals["rows"] == len(expected[0][0])
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_a_run_stopped_before_its_first_part_starts_over_with_the_fixed_input(engine, tmp_path):
    """`--on-error fail` names the bad row; the user fixes it and runs the same command again.
    The output then held a manifest of no parts whose inputs no longer matched, and the rerun
    was refused. With no part written there is nothing to mix: it starts over."""
    source = tmp_path / "in.jsonl"
    write_jsonl(source, [{"id": "a", "text": "one"}, {"id": "b", "text": ""}])
    options = EmbedFileOptions(on_error="fail", quiet=True)
    with pytest.raises(ValueError, match="row 1 .*empty text"):
        embed_file(source, tmp_path / "out", options, engine=engine, log=None)
    write_jsonl(source, [{"id": "a", "text": "one"}, {"id": "b", "text": "two, fixed"}])
    totals = embed_file(source, tmp_path / "out", options, engine=engine, log=None)
    assert totals["rows"] == 2 and read_output(tmp_path / "out")[:2] == ([0, 1], ["a", "b"])
    # Nor do other options conflict with a run that wrote nothing.
    write_jsonl(source, [{"id": "a", "text": ""}])
    with pytest.raises(ValueError, match="row 0 .*empty text"):
        embed_file(source, tmp_path / "again", options, engine=engine, log=None)
    write_jsonl(source, [{"id": "a", "text": "one"}])
    smaller = EmbedFileOptions(dimensions=8, quiet=True)
    embed_file(source, tmp_path / "again", smaller, engine=engine, log=None)
    assert _manifest(tmp_path / "again")["options"]["dimensions"] == 8
    assert read_output(tmp_path / "again")[2].shape == (1, 8)


def _start(corpus: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, str(corpus), "--out", str(out), *_flags()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_parts(out: Path, process: subprocess.Popen[str], parts: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        manifest = _manifest(out)
        if manifest is not None and len(manifest["parts"]) >= parts:
            return
        time.sleep(0.01)
    raise AssertionError(f"the run ended or stalled before writing {parts} parts")


def test_ctrl_c_mid_run_is_one_line_and_exit_130_then_resumes(corpus, expected, engine, tmp_path):
    """Ctrl-C (SIGINT) printed a KeyboardInterrupt traceback, then the C++ runtime aborted
    ("terminate called without an active exception", exit -6: SIGABRT, a core dump) because the
    model's thread was still inside ONNX Runtime when the interpreter shut down."""
    out = tmp_path / "out"
    process = _start(corpus, out)
    try:
        _wait_for_parts(out, process, 1)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines() == [
        "embedserve: interrupted: the parts written are kept; run the same command to resume"
    ]
    interrupted = _manifest(out)
    assert not interrupted["complete"]
    embed_file(corpus, out, _options(), engine=engine, log=None)
    _assert_same(out, expected)


def test_a_second_run_on_an_output_in_use_is_refused(corpus, expected, engine, tmp_path):
    """Two runs on one --out: the second deleted the first's part in progress as a stray
    (the first then died: "No such file or directory: '.part-000001.parquet.tmp'"), and
    both wrote parts and manifests over each other's."""
    out = tmp_path / "out"
    process = _start(corpus, out)
    try:
        _wait_for_parts(out, process, 1)
        with pytest.raises(OutputError, match=f"{out} is in use by another embed-file run"):
            embed_file(corpus, out, _options(), engine=engine, log=None)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == 0, stderr
    _assert_same(out, expected)
    # Once it has ended, the folder is free: the same command finds the run complete.
    assert embed_file(corpus, out, _options(), engine=engine, log=None)["this_run_rows"] == 0


@pytest.mark.parametrize("code", [errno.EBADF, errno.ENOLCK], ids=["EBADF", "ENOLCK"])
def test_a_folder_that_cannot_be_locked_still_runs(corpus, expected, engine, tmp_path, code):
    """NFS emulates flock with a write lock, which a folder opened to read cannot take (EBADF),
    and without its lock daemon says ENOLCK: the lock must not stop runs it cannot guard."""
    import fcntl

    real = fcntl.flock

    def cannot_lock(fd: int, operation: int) -> None:
        if operation & fcntl.LOCK_EX:
            raise OSError(code, os.strerror(code))
        real(fd, operation)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fcntl, "flock", cannot_lock)
        embed_file(corpus, tmp_path / "out", _options(), engine=engine, log=None)
    _assert_same(tmp_path / "out", expected)


@pytest.mark.parametrize(("edit", "now"), [("a", "more"), ("w", "fewer")])
def test_a_file_that_changes_while_read_stops_the_run_by_name(tmp_path, edit, now):
    """A file written to during the run (a log still appended to) threw its rows' numbering off
    the next file's: the run died with "chunk starts at row 400, expected 410", an internal
    check that names no file; a file that shrank did the same."""
    first = tmp_path / "a.txt"
    first.write_text("".join(f"line {i}\n" for i in range(6)))
    (tmp_path / "b.txt").write_text("next file\n")
    files = find_inputs(tmp_path)
    slices = plan(files, [count_rows(f) for f in files], 0)
    with open(first, edit) as f:  # after the count, before the read
        f.write("one line more\n")
    with pytest.raises(CorpusError, match=rf"{first} changed while it was read: 6 rows .*{now}"):
        list(chunks_of(slices[0], Columns(), batch_texts=4))
