"""embed-file --server: the same parts, rows and vectors as the local run, from a real server on
127.0.0.1 (issue #23: corpus work sent as `X-Priority: batch`, honouring Retry-After)."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import httpx
import numpy as np
import pytest
from embedserve.cli import main
from embedserve.corpus import EmbedFileOptions, embed_file
from embedserve.corpus.output import OutputError
from embedserve.corpus.pipeline import MODEL_SETTINGS
from embedserve.corpus.remote import (
    ServerError,
    ServerOptions,
    embed_file_on_server,
    embeddings_url,
)
from embedserve.server.config import Limits

from tests.corpus.conftest import read_output, write_csv, write_jsonl, write_parquet
from tests.server.conftest import live_server, metric_samples, unhurried, wait_for
from tests.support import free_port
from tests.support.gated import GatedEngine, background, queued_behind_a_held_run

MODEL = "all-MiniLM-L6-v2"
KEY = "sk-corpus"


@pytest.fixture(scope="module")
def server(engine):
    config = unhurried(api_keys=(KEY,), allow_dimensions=True)  # MiniLM is no Matryoshka model
    with live_server(config, engines={MODEL: engine}) as live:
        yield live


def corpus(folder, texts: list[str]) -> None:
    """JSONL, CSV and Parquet files of `texts` (ids x0, x1, ...), row 7 without a text."""
    records = [{"id": f"x{i}", "text": t} for i, t in enumerate(texts)]
    records[7] = {"id": "x7"}
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", records[:20])
    write_csv(folder / "b.csv", records[20:30])
    write_parquet(folder / "c.parquet", records[30:])


def requests_by_status(url: str) -> dict[str, float]:
    samples = metric_samples(httpx.get(url + "/metrics").text, "embedserve_requests_total")
    out: dict[str, float] = {}
    for key, value in samples.items():
        if 'route="/v1/embeddings"' in key:
            status = key.split('status="')[1].split('"')[0]
            out[status] = out.get(status, 0) + value
    return out


def admitted(url: str) -> dict[str, float]:
    """Requests admitted so far, by priority (`embedserve_priority_requests_total`)."""
    samples = metric_samples(httpx.get(url + "/metrics").text, "embedserve_priority_requests_total")
    return {
        priority: samples[
            f'embedserve_priority_requests_total{{outcome="admitted",priority="{priority}"}}'
        ]
        for priority in ("interactive", "batch")
    }


def manifest(out) -> dict:
    return json.loads((out / "_manifest.json").read_text())


def assert_every_row_embedded(out, texts: list[str], engine) -> None:
    """The output holds every row of `texts` (ids d0, d1, ...) in order, with the engine's vectors."""
    rows, ids, vectors = read_output(out)
    assert rows == list(range(len(texts))) and ids == [f"d{i}" for i in range(len(texts))]
    np.testing.assert_allclose(vectors, engine.embed(texts).embeddings, atol=1e-5)


def refused_job(engine, tmp_path, texts: list[str], limits: Limits, options) -> str:
    """Run embed-file on `texts` against a server with `limits` that refuses part of them; the
    job's error message (the parts written before it stay in tmp_path / "out")."""
    write_jsonl(tmp_path / "in.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)])
    with (
        live_server(unhurried(limits=limits), engines={MODEL: engine}) as strict,
        pytest.raises(ServerError) as failed,
    ):
        embed_file_on_server(
            tmp_path / "in.jsonl",
            tmp_path / "out",
            options,
            server=ServerOptions(strict.url),
            log=None,
        )
    return str(failed.value)


def test_server_output_equals_the_local_output(
    server, engine, reference, tmp_path, minilm_dir, monkeypatch
):
    texts = [t[:120] for t in reference["texts"][:40]]
    corpus(tmp_path / "in", texts)
    options = EmbedFileOptions(model=str(minilm_dir), batch_texts=8, rows_per_part=16, quiet=True)
    local = embed_file(tmp_path / "in", tmp_path / "local", options, engine=engine, log=None)
    before = requests_by_status(server.url).get("200", 0)
    admitted_before = admitted(server.url)

    monkeypatch.setenv("EMBEDSERVE_API_KEY", KEY)
    argv = ["embed-file", str(tmp_path / "in"), "--out", str(tmp_path / "served")]
    argv += ["--server", server.url + "/v1", "--model", MODEL, "--server-concurrency", "3"]
    assert main([*argv, "--batch-texts", "8", "--rows-per-part", "16", "--quiet"]) == 0

    rows, ids, vectors = read_output(tmp_path / "local")
    served_rows, served_ids, served_vectors = read_output(tmp_path / "served")
    assert served_rows == rows == [r for r in range(40) if r != 7]
    assert served_ids == ids
    np.testing.assert_allclose(served_vectors, vectors, atol=1e-5)
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert sorted(p.name for p in (tmp_path / "served").iterdir()) == names
    local_manifest, served_manifest = manifest(tmp_path / "local"), manifest(tmp_path / "served")
    # Same parts: row ranges, counts, the bad row, and the tokens the server counted.
    assert served_manifest["parts"] == local_manifest["parts"]
    assert local["skipped_rows"] == [(7, "no 'text' field")]
    assert served_manifest["complete"]
    # The options are the local run's but for the model's name and the settings that decide
    # its vectors (precision, tokenizer, ...): the server's.
    assert served_manifest["options"] == {
        **local_manifest["options"],
        "model": MODEL,
        **dict.fromkeys(MODEL_SETTINGS, "server"),
    }
    # One probe, then one request per chunk of up to 8 texts (3 for a.jsonl, 2 for b.csv, 2 for
    # c.parquet), c.parquet's first cut in two at the part end after row 32, so that no
    # request's tokens straddle two parts.
    assert requests_by_status(server.url).get("200", 0) - before == 1 + 8
    # ... every one of them served as batch work, as /metrics shows an operator.
    admitted_after = admitted(server.url)
    assert admitted_after["batch"] - admitted_before["batch"] == 1 + 8
    assert admitted_after["interactive"] == admitted_before["interactive"]

    # Other embedding types are made from the server's float32 by the local run's function;
    # --dimensions goes to the server.
    small = replace(options, dimensions=128, embedding_type="int8")
    embed_file(tmp_path / "in", tmp_path / "local8", small, engine=engine, log=None)
    embed_file_on_server(
        tmp_path / "in",
        tmp_path / "served8",
        replace(small, model=MODEL),
        server=ServerOptions(server.url, api_key=KEY),
        log=None,
    )
    _, _, local8 = read_output(tmp_path / "local8")
    _, _, served8 = read_output(tmp_path / "served8")
    assert local8.dtype == served8.dtype == np.int8 and served8.shape == (39, 128)
    # float32 within 1e-5 can still round to the next int8 step at a boundary, no further.
    assert np.abs(local8.astype(np.int16) - served8.astype(np.int16)).max() <= 1


@pytest.mark.parametrize(
    ("limits", "refused"),
    [
        (Limits(max_request_tokens=80), "400"),  # too_many_tokens: about 2 of these texts
        (Limits(max_inputs=3), "400"),  # too_many_inputs
        (Limits(max_body_bytes=500), "413"),  # about 3 texts of JSON
    ],
    ids=["tokens", "inputs", "body"],
)
def test_requests_refused_as_too_large_are_split_and_the_output_is_the_local_one(
    limits, refused, engine, reference, tmp_path, minilm_dir
):
    texts = [t[:120] for t in reference["texts"][:40]]
    corpus(tmp_path / "in", texts)
    options = EmbedFileOptions(model=str(minilm_dir), batch_texts=8, rows_per_part=16, quiet=True)
    embed_file(tmp_path / "in", tmp_path / "local", options, engine=engine, log=None)
    lines: list[str] = []
    with live_server(unhurried(limits=limits), engines={MODEL: engine}) as small:
        embed_file_on_server(
            tmp_path / "in",
            tmp_path / "served",
            replace(options, model=MODEL),
            server=ServerOptions(small.url, concurrency=2),
            log=lines.append,
        )
        assert requests_by_status(small.url).get(refused, 0) >= 1

    rows, ids, vectors = read_output(tmp_path / "local")
    served_rows, served_ids, served_vectors = read_output(tmp_path / "served")
    assert served_rows == rows and served_ids == ids
    np.testing.assert_allclose(served_vectors, vectors, atol=1e-5)
    # The same parts, bad row and token counts: the pieces' totals add up to the chunk's.
    assert manifest(tmp_path / "served")["parts"] == manifest(tmp_path / "local")["parts"]
    assert manifest(tmp_path / "served")["complete"]
    assert any("requests are split, to at most" in line for line in lines), lines


def test_the_size_learned_from_one_refusal_cuts_the_later_chunks(engine, tmp_path):
    texts = [f"document {i}: a few words about topic {i % 5}" for i in range(40)]
    write_jsonl(tmp_path / "in.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)])
    options = EmbedFileOptions(model=MODEL, batch_texts=8, rows_per_part=16, quiet=True)
    lines: list[str] = []
    with live_server(unhurried(limits=Limits(max_inputs=3)), engines={MODEL: engine}) as small:
        # One request at a time, so that the count below is exact.
        embed_file_on_server(
            tmp_path / "in.jsonl",
            tmp_path / "out",
            options,
            server=ServerOptions(small.url, concurrency=1),
            log=lines.append,
        )
        requests = requests_by_status(small.url)
    # The first chunk's 8 texts are refused, then its first 4: 2 refusals in the whole job. Every
    # later request holds 2 texts: the probe, then 40 rows in 20 requests.
    assert requests == {"400": 2, "200": 1 + 20}
    said = (
        "the server refused {} texts in one request as too large: requests are split, to at "
        "most {} texts each"
    )
    assert [line for line in lines if "split" in line] == [said.format(8, 4), said.format(4, 2)]
    assert_every_row_embedded(tmp_path / "out", texts, engine)


def test_a_single_text_too_large_for_a_request_stops_the_job(engine, tmp_path):
    texts = [f"document {i}: a few words about topic {i % 5}" for i in range(12)]
    texts[10] = "far too many tokens for one request on this server " * 10
    options = EmbedFileOptions(model=MODEL, batch_texts=4, rows_per_part=4, quiet=True)
    # Within the server's 8,192 tokens an input, past its 50 a request: too_many_tokens alone.
    message = refused_job(engine, tmp_path, texts, Limits(max_request_tokens=50), options)
    # Which row, and where to find it: the file's line, as --on-error fail names it.
    place = f"input row 10 ({tmp_path / 'in.jsonl'}, line 11)"
    assert message.startswith(f"{place}: the server at http://127.0.0.1:"), message
    assert "answered 400" in message and "at most 50 are allowed per request" in message
    assert [p["end"] for p in manifest(tmp_path / "out")["parts"]] == [4, 8]


def test_an_overloaded_server_is_waited_out_and_every_row_arrives(engine, tmp_path):
    """The server's own admission: batch work is refused at half the wait interactive work is
    admitted at. With the model held and 1.5 s of work queued against a 2 s ceiling, the job's
    requests get 429 + Retry-After (so they carried X-Priority: batch: an interactive request
    is admitted), and the job finishes once the queue drains."""
    gated = GatedEngine(engine)
    texts = [f"corpus line number {i}" for i in range(12)]
    write_jsonl(tmp_path / "in.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)])
    with live_server(unhurried(max_wait_seconds=2.0), engines={MODEL: gated}) as server:
        batcher = server.state.registry.models[0].batcher

        def post(body: dict) -> httpx.Response:
            return httpx.post(server.url + "/v1/embeddings", json=body, timeout=60)

        with queued_behind_a_held_run(gated, batcher, post, MODEL):
            options = EmbedFileOptions(model=MODEL, batch_texts=5, rows_per_part=8, quiet=True)
            job, job_out = background(
                lambda: embed_file_on_server(
                    tmp_path / "in.jsonl",
                    tmp_path / "out",
                    options,
                    server=ServerOptions(server.url, concurrency=2, retry_seconds=120),
                    log=None,
                )
            )
            wait_for(lambda: requests_by_status(server.url).get("429", 0) >= 2)
            assert batcher.queued_inputs == 64  # refused, not queued
            # The same request as interactive work would have been admitted.
            probe, probe_out = background(lambda: post({"model": MODEL, "input": "a query"}))
            wait_for(lambda: batcher.queued_inputs == 65)
            assert job.is_alive()
        probe.join(30)
        assert probe_out["value"].status_code == 200, probe_out
        job.join(60)
        assert "error" not in job_out, job_out
        assert job_out["value"]["rows"] == 12
    assert_every_row_embedded(tmp_path / "out", texts, engine)


def test_a_refused_row_stops_the_job_and_the_rerun_resumes(engine, tmp_path):
    texts = [f"document {i}: a few words about topic {i % 5}" for i in range(30)]
    texts[25] = "far too long for the strict server " * 40
    options = EmbedFileOptions(model=MODEL, batch_texts=4, rows_per_part=8, quiet=True)
    message = refused_job(engine, tmp_path, texts, Limits(max_input_chars=500), options)
    # Which rows, and the server's own words.
    assert message.startswith("input rows 24 to 27 (4 texts): the server at http://127.0.0.1:")
    assert "answered 400" in message and "500" in message, message
    first = manifest(tmp_path / "out")
    assert [p["end"] for p in first["parts"]] == [8, 16, 24] and not first["complete"]

    with live_server(engines={MODEL: engine}) as server:
        resumed = embed_file_on_server(
            tmp_path / "in.jsonl",
            tmp_path / "out",
            options,
            server=ServerOptions(server.url),
            log=None,
        )
    assert resumed["this_run_rows"] == 6 and resumed["rows"] == 30
    assert_every_row_embedded(tmp_path / "out", texts, engine)
    # Nor does a local run resume a server run: the precision is the server's.
    with pytest.raises(ValueError, match="precision: 'server' then, 'fp32' now"):
        embed_file(tmp_path / "in.jsonl", tmp_path / "out", options, engine=engine, log=None)


def test_a_refusal_naming_input_k_names_its_input_row(engine, tmp_path):
    """The server names the refused text by its place in the request (`input[2]`); a request
    holds the chunk's good rows only, so the user had to count past the skipped ones to find
    which input row that was."""
    texts = [f"document {i}" for i in range(12)]
    texts[5] = ""  # skipped: the request for rows 4 to 8 holds rows 4, 6, 7, 8
    texts[7] = "far too long for the strict server " * 40
    options = EmbedFileOptions(model=MODEL, batch_texts=4, rows_per_part=8, quiet=True)
    message = refused_job(engine, tmp_path, texts, Limits(max_input_chars=500), options)
    assert message.startswith("input rows 4 to 8 (4 texts): "), message
    assert "input[2] has 1400 characters" in message
    assert message.endswith(f"(input[2]: input row 7 ({tmp_path / 'in.jsonl'}, line 8))"), message


def test_a_refused_lone_row_is_named_once_with_its_line(engine, tmp_path):
    """A request of one text names its row; the refusal says where it is in the file there, not
    the row twice (`input row 7: ... (input row 7 (FILE, line 8))`)."""
    texts = [f"document {i}" for i in range(10)]
    texts[7] = "far too long for the strict server " * 40
    options = EmbedFileOptions(model=MODEL, batch_texts=1, rows_per_part=8, quiet=True)
    message = refused_job(engine, tmp_path, texts, Limits(max_input_chars=500), options)
    assert message.startswith(f"input row 7 ({tmp_path / 'in.jsonl'}, line 8): the server"), message
    assert message.count("input row 7") == 1, message


def test_an_unusable_out_is_refused_before_any_request(tmp_path):
    """A wrong --out was found only after the probe request: against a server that is down,
    after five tries and 15 s of back-off, with the server's error instead of the output's."""
    write_jsonl(tmp_path / "in.jsonl", [{"text": "one line"}])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    closed = ServerOptions(f"http://127.0.0.1:{free_port()}", tries=1)
    with pytest.raises(OutputError, match="not empty"):
        embed_file_on_server(
            tmp_path / "in.jsonl",
            tmp_path / "other",
            EmbedFileOptions(model=MODEL, quiet=True),
            server=closed,
            log=None,
        )


def test_errors_name_the_server_and_its_answer(server, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"text": "one line"}])
    options = EmbedFileOptions(model=MODEL, quiet=True)
    with pytest.raises(ServerError, match=r"the first request .* answered 401 "):
        embed_file_on_server(
            tmp_path / "in.jsonl",
            tmp_path / "a",
            options,
            server=ServerOptions(server.url),
            log=None,
        )
    with pytest.raises(ServerError, match=r"answered (400|404) .*no-such-model"):
        embed_file_on_server(
            tmp_path / "in.jsonl",
            tmp_path / "b",
            replace(options, model="no-such-model"),
            server=ServerOptions(server.url, api_key=KEY),
            log=None,
        )
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerError, match=r"failed 2 tries; the last: no answer \(Connection"):
        embed_file_on_server(
            tmp_path / "in.jsonl",
            tmp_path / "c",
            options,
            server=ServerOptions(closed, tries=2, backoff_seconds=0.01),
            log=None,
        )


def test_the_url_is_a_root_or_a_v1_base():
    assert embeddings_url("http://h:8000") == "http://h:8000/v1/embeddings"
    assert embeddings_url("http://h:8000/v1/") == "http://h:8000/v1/embeddings"
    assert embeddings_url("https://h/proxy") == "https://h/proxy/v1/embeddings"
    with pytest.raises(ValueError, match="http:// or https:// URL"):
        embeddings_url("h:8000")


def test_the_url_may_be_the_endpoint_itself():
    """The endpoint copied from a curl line was sent to `.../v1/embeddings/v1/embeddings`: 404."""
    assert embeddings_url("http://h:8000/v1/embeddings") == "http://h:8000/v1/embeddings"
    assert embeddings_url("http://h:8000/v1/embeddings/") == "http://h:8000/v1/embeddings"


@pytest.mark.parametrize("url", ["http://[::1", "http://h:abc", "http://h:99999"])
def test_a_malformed_url_is_refused_naming_the_flag(url):
    """These said "Invalid IPv6 URL", "Port could not be cast to integer value as 'abc'" or
    "Port out of range 0-65535": no flag, no URL."""
    with pytest.raises(ValueError, match=rf"^--server {re.escape(url)!s}: .+"):
        embeddings_url(url)


@pytest.mark.parametrize(
    ("flags", "refused"),
    [
        (["--precision", "int8"], "--precision"),
        (["--threads", "2", "--bulk-session", "off"], "--intra-op-threads, --bulk-session"),
        (["--cache-dir", "cache"], "--cache-dir"),
        (["--ray"], "--ray"),
    ],
)
def test_local_only_flags_are_refused_with_server(flags, refused, capsys):
    argv = ["embed-file", "in.jsonl", "--out", "out", "--server", "http://127.0.0.1:9"]
    with pytest.raises(SystemExit) as exited:
        main([*argv, *flags])
    assert exited.value.code == 2
    assert f"error: {refused} cannot be used with --server" in capsys.readouterr().err


def test_server_flags_need_server(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["embed-file", "in.jsonl", "--out", "out", "--server-concurrency", "3"])
    assert exited.value.code == 2
    assert "--server-concurrency cannot be used without --server" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        # Taken and ignored: the file was embedded in this process.
        (["--ray-actors", "2"], "--ray-actors cannot be used without --ray"),
        (["--ray-gpus-per-actor", "1"], "--ray-gpus-per-actor cannot be used without --ray"),
        (["--ray", "--ray-cpus-per-actor", "-2"], "--ray-cpus-per-actor: must be more than 0"),
        (["--ray", "--ray-gpus-per-actor", "-1"], "--ray-gpus-per-actor: must be 0 or more"),
    ],
)
def test_ray_flags_need_ray_and_sane_values(flags, message, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["embed-file", "in.jsonl", "--out", "out", *flags])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_the_key_comes_from_the_environment():
    from embedserve.corpus.cli import api_key

    env = {"OPENAI_API_KEY": "sk-openai", "MY_KEY": "sk-mine"}
    assert api_key(None, env) == "sk-openai"
    assert api_key(None, {**env, "EMBEDSERVE_API_KEY": "sk-ours"}) == "sk-ours"
    assert api_key("MY_KEY", env) == "sk-mine"
    assert api_key(None, {}) is None
    with pytest.raises(ValueError, match="--api-key-env NOPE: the variable NOPE is not set"):
        api_key("NOPE", env)


def test_retry_after_is_seconds_or_a_date(monkeypatch):
    from email.utils import formatdate
    from types import SimpleNamespace

    from embedserve.corpus import remote
    from embedserve.corpus.remote import _retry_after

    assert _retry_after("3") == 3.0
    now = 1_700_000_000.0  # the client's clock, held still: a date is read against it exactly
    monkeypatch.setattr(remote, "time", SimpleNamespace(time=lambda: now))
    assert _retry_after(formatdate(now + 10, usegmt=True)) == 10.0
    # No busy loop on 0 or a past date; no header or an unreadable one: 1 s.
    assert _retry_after("0") == _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.1
    assert _retry_after(None) == _retry_after("soon") == 1.0


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ([0, 0], "indexes 0, 0"),  # the right count, one input twice and one missing
        ([0], "answered 1 vectors"),
        ([0, 1, 2], "answered 3 vectors"),
    ],
)
def test_an_answer_that_is_not_each_inputs_own_vector_stops_the_job(data, why):
    from embedserve.corpus.remote import EmbeddingsClient

    client = EmbeddingsClient(ServerOptions(url="http://127.0.0.1:9"), MODEL, None)
    vector = np.arange(4, dtype=np.float32)
    answer = {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": vector.tolist()} for i in data],
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
    }
    with pytest.raises(ServerError, match=why):
        client._parse(json.dumps(answer).encode(), 2, "input rows 0 to 1 (2 texts)")
    answer["data"] = [{"index": 0, "embedding": "not base64!"}, {"index": 1, "embedding": "AA=="}]
    with pytest.raises(ServerError, match="not an embeddings response"):
        client._parse(json.dumps(answer).encode(), 2, "input rows 0 to 1 (2 texts)")


def test_an_answer_of_another_width_than_the_first_stops_the_job():
    from embedserve.corpus.remote import EmbeddingsClient

    client = EmbeddingsClient(ServerOptions(url="http://127.0.0.1:9"), MODEL, None)
    client.width = 384  # the probe's
    answer = {"data": [{"index": 0, "embedding": [0.5] * 128}], "usage": {"prompt_tokens": 3}}
    with pytest.raises(ServerError, match="answered vectors of 128 dimensions, 384 before"):
        client._parse(json.dumps(answer).encode(), 1, "input row 0")
