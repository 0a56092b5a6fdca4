"""embed-file on a local Ray instance (ray.init(num_cpus=2)): the same parts, rows and vectors."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from embedserve.corpus import EmbedFileOptions, embed_file

from tests.corpus.conftest import read_output, write_csv, write_jsonl, write_parquet

# Ray warns about its own deprecated settings when it starts; none of them are ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_ray_output_equals_the_local_output(local_ray, engine, reference, tmp_path, minilm_dir):
    from embedserve.integrations.ray import EmbedBatch, embed_file_on_ray

    texts = [t[:120] for t in reference["texts"][:40]]
    records = [{"id": f"x{i}", "text": t} for i, t in enumerate(texts)]
    records[7] = {"id": "x7"}  # a bad row travels through Ray as a skipped row
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", records[:20])
    write_csv(tmp_path / "in" / "b.csv", records[20:30])
    write_parquet(tmp_path / "in" / "c.parquet", records[30:])
    options = EmbedFileOptions(model=str(minilm_dir), batch_texts=8, rows_per_part=16, quiet=True)

    local = embed_file(tmp_path / "in", tmp_path / "local", options, engine=engine, log=None)
    ordered = local_ray.data.DataContext.get_current().execution_options.preserve_order
    on_ray = embed_file_on_ray(tmp_path / "in", tmp_path / "ray", options, actors=1)
    # Ordered on its own Dataset: the caller's current context is left as it was.
    assert local_ray.data.DataContext.get_current().execution_options.preserve_order == ordered

    rows, ids, vectors = read_output(tmp_path / "local")
    ray_rows, ray_ids, ray_vectors = read_output(tmp_path / "ray")
    assert ray_rows == rows == [r for r in range(40) if r != 7]
    assert ray_ids == ids
    np.testing.assert_allclose(ray_vectors, vectors, atol=1e-5)
    assert on_ray["skipped_rows"] == local["skipped_rows"] == [(7, "no 'text' field")]
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == names
    local_parts = json.loads((tmp_path / "local" / "_manifest.json").read_text())["parts"]
    ray_parts = json.loads((tmp_path / "ray" / "_manifest.json").read_text())["parts"]
    assert ray_parts == local_parts

    # The callable class on its own, on a Dataset a user built.
    ds = local_ray.data.from_items([{"text": t} for t in texts[:6]]).map_batches(
        EmbedBatch,
        fn_constructor_kwargs={"model": str(minilm_dir), "dimensions": 32},
        batch_size=4,
        compute=local_ray.data.ActorPoolStrategy(size=1),
        num_cpus=1,
    )
    # By text: this Dataset is not ordered (embed_file_on_ray above no longer orders the
    # caller's Datasets as a side effect), and each row carries its own text.
    by_text = {row["text"]: row["embedding"] for row in ds.take_all()}
    assert sorted(by_text) == sorted(texts[:6])
    got = np.stack([by_text[t] for t in texts[:6]])
    expected = engine.embed(texts[:6], dimensions=32).embeddings
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_a_dataset_without_the_text_column_says_so(local_ray, minilm_dir):
    """The error comes back from the actor at the end of Ray's traceback: it names the column
    asked for and the ones the batch has, where it was a bare `KeyError: 'text'`."""
    from embedserve.integrations.ray import EmbedBatch

    ds = local_ray.data.from_items([{"body": "a text"}]).map_batches(
        EmbedBatch,
        fn_constructor_kwargs={"model": str(minilm_dir)},
        compute=local_ray.data.ActorPoolStrategy(size=1),
        num_cpus=1,
    )
    with pytest.raises(local_ray.exceptions.RayTaskError) as failed:
        ds.take_all()
    assert "EmbedBatch: the batch has no 'text' column (text_column); its columns: 'body'" in str(
        failed.value
    )


def test_an_actor_the_cluster_cannot_hold_is_refused(local_ray, reference, tmp_path, minilm_dir):
    """A GPU per actor on a cluster without one: Ray kept the actor pending and the run waited
    forever, with nothing said. Refused before any Ray work, naming the flag."""
    from embedserve.integrations.ray import embed_file_on_ray

    corpus = write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in reference["texts"][:3]])
    options = EmbedFileOptions(model=str(minilm_dir), quiet=True)
    with pytest.raises(
        ValueError,
        match=r"1 GPU\(s\) \(--ray-gpus-per-actor\), but no node .* \(the most on one node: 0\)",
    ):
        embed_file_on_ray(corpus, tmp_path / "out", options, num_gpus=1)
    with pytest.raises(
        ValueError,
        match=r"4 CPU\(s\) \(--ray-cpus-per-actor\), but no node .* \(the most on one node: 2\)",
    ):
        embed_file_on_ray(corpus, tmp_path / "out", options, num_cpus=4)


def test_a_cluster_that_may_grow_is_warned_not_refused(caplog):
    """On a cluster the run joined, an autoscaler may still add a node with the GPU an actor
    asks for: the run waits for it, and says why (a Ray the run started never grows)."""
    from embedserve.integrations.ray import RayEmbedder

    embedder = RayEmbedder(EmbedFileOptions(), actors=1, num_cpus=1.0, num_gpus=1.0)
    cpu_only = [{"CPU": 2.0}]
    with caplog.at_level(logging.WARNING, logger="embedserve.integrations.ray"):
        embedder.check_fits(cpu_only, can_grow=True)
    assert "1 GPU(s) (--ray-gpus-per-actor)" in caplog.text
    assert "waits until the cluster adds such a node" in caplog.text
    with pytest.raises(ValueError, match="would wait forever"):
        embedder.check_fits(cpu_only, can_grow=False)
