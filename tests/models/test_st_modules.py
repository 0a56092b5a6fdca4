"""sentence-transformers module stacks on tiny random BERT models, against sentence-transformers.

Each case saves a sentence-transformers folder (Transformer → Pooling → [Dense] → [Normalize])
around the same tiny random BERT, loads it with embedserve (compiled by embedserve's own
compiler) and compares with `SentenceTransformer.encode()` on real texts of mixed lengths,
some past the model's 64-token limit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import sentence_transformers
import torch
import transformers
from embedserve.engine import Engine
from embedserve.models import load_model_config
from embedserve.models.torch_checkpoint import read_torch_checkpoint
from sentence_transformers.sentence_transformer import modules as st_models

from tests.support.decoder_tokenizers import APPEND_EOS, EOS
from tests.support.tiny import TOKENIZER_FILES

COSINE = 0.9999
MAX_SEQ = 64


@pytest.fixture(scope="module")
def texts(reference) -> list[str]:
    # Long and short texts together, so every batch pads and some texts are truncated.
    chosen = reference["texts"][:24] + reference["texts"][-16:]
    assert sum(n > MAX_SEQ for n in reference["tokens_untruncated"][:24]) >= 5
    return chosen


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, minilm_dir) -> Path:
    """A 2-layer random BERT (seeded) with all-MiniLM's uncased WordPiece tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_act="gelu",
    )
    torch.manual_seed(1234)
    transformers.BertModel(config).eval().save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_dir / name, folder / name)
    return folder


def st_folder(
    tiny_bert: Path,
    target: Path,
    *,
    pooling: str,
    include_prompt: bool = True,
    dense: str | None = None,
    normalize: bool = False,
    prompts: dict[str, str] | None = None,
    default_prompt: str | None = None,
) -> Path:
    """Save a sentence-transformers model around tiny_bert; return its folder."""
    models = st_models
    modules = [models.Transformer(str(tiny_bert), max_seq_length=MAX_SEQ)]
    modules.append(models.Pooling(32, pooling_mode=pooling, include_prompt=include_prompt))
    if dense is not None:
        torch.manual_seed(99)
        activation = {
            "tanh": torch.nn.Tanh(),
            "identity": torch.nn.Identity(),
            "gelu": torch.nn.GELU(),
        }[dense]
        modules.append(models.Dense(32, 24, activation_function=activation))
    if normalize:
        modules.append(models.Normalize())
    model = sentence_transformers.SentenceTransformer(
        modules=modules, prompts=prompts, default_prompt_name=default_prompt, device="cpu"
    )
    model.save(str(target))
    return target


def st_vectors(
    folder: Path, texts: list[str], prompt_name: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """sentence-transformers' vectors and token counts (prompt included) for `texts`."""
    model = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
    vectors = model.encode(texts, batch_size=16, prompt_name=prompt_name, convert_to_numpy=True)
    prompt = model.prompts.get(prompt_name or model.default_prompt_name or "", "")
    counts = model.tokenize([prompt + t for t in texts])["attention_mask"].sum(1).numpy()
    return vectors, counts


def assert_same(folder: Path, texts: list[str], prompt_name: str | None = None) -> Engine:
    want, want_counts = st_vectors(folder, texts, prompt_name)
    engine = Engine.from_pretrained(folder)
    result = engine.embed(texts, prompt_name=prompt_name)
    assert result.embeddings.shape == want.shape
    np.testing.assert_array_equal(result.token_counts, want_counts)
    got, ref = result.embeddings.astype(np.float64), want.astype(np.float64)
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= COSINE, f"worst cosine {cos.min():.7f} at text {int(cos.argmin())}"
    # Not only the direction: the scale (normalized or not) must match too.
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), np.linalg.norm(ref, axis=1), rtol=1e-3)
    return engine


@pytest.mark.parametrize(
    ("pooling", "normalize"),
    [
        ("cls", False),
        ("mean", True),
        ("max", False),
        ("mean_sqrt_len_tokens", False),
        ("weightedmean", True),
        ("lasttoken", False),
    ],
)
def test_pooling_modes_match_sentence_transformers(tiny_bert, tmp_path, texts, pooling, normalize):
    folder = st_folder(tiny_bert, tmp_path / "m", pooling=pooling, normalize=normalize)
    engine = assert_same(folder, texts)
    assert engine.model_info.normalize is normalize


def test_legacy_module_paths_and_pooling_flags(tiny_bert, tmp_path, texts):
    """modules.json and 1_Pooling/config.json as sentence-transformers 2.x wrote them."""
    folder = st_folder(tiny_bert, tmp_path / "m", pooling="max", normalize=True)
    modules = json.loads((folder / "modules.json").read_text())
    for module in modules:
        module["type"] = "sentence_transformers.models." + module["type"].rsplit(".", 1)[-1]
    (folder / "modules.json").write_text(json.dumps(modules))
    new = json.loads((folder / "1_Pooling" / "config.json").read_text())
    assert new["pooling_mode"] == "max"  # the new format, which this test rewrites
    legacy = {
        "word_embedding_dimension": 32,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": True,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
    }
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(legacy))
    assert load_model_config(folder, "x").pooling == "max"
    assert_same(folder, texts)


@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_dense_head_after_pooling(tiny_bert, tmp_path, texts, activation):
    folder = st_folder(tiny_bert, tmp_path / "m", pooling="mean", dense=activation, normalize=True)
    engine = assert_same(folder, texts)
    assert engine.model_info.dimension == 24


def test_dense_head_from_pytorch_bin_without_torch_at_run_time(tiny_bert, tmp_path, texts):
    """Older repos ship 2_Dense/pytorch_model.bin; embedserve reads it without torch."""
    folder = st_folder(tiny_bert, tmp_path / "m", pooling="cls", dense="identity")
    from safetensors.torch import load_file

    weights = load_file(str(folder / "2_Dense" / "model.safetensors"))
    torch.save(weights, folder / "2_Dense" / "pytorch_model.bin")
    (folder / "2_Dense" / "model.safetensors").unlink()
    read = read_torch_checkpoint(folder / "2_Dense" / "pytorch_model.bin")
    np.testing.assert_array_equal(read["linear.weight"], weights["linear.weight"].numpy())
    assert_same(folder, texts)


@pytest.mark.parametrize("zip_format", [True, False])
def test_torch_checkpoint_reader_refuses_other_pickled_objects(tmp_path, zip_format):
    torch.save(
        {"linear.weight": torch.zeros(2, 2), "extra": torch.nn.Linear(2, 2)},
        tmp_path / "x.bin",
        _use_new_zipfile_serialization=zip_format,
    )
    with pytest.raises(ValueError, match="not allowed"):
        read_torch_checkpoint(tmp_path / "x.bin")


@pytest.mark.parametrize("pooling", ["mean", "weightedmean", "cls"])
def test_include_prompt_false_leaves_the_prompt_out(tiny_bert, tmp_path, texts, pooling):
    prompts = {"query": "Represent this sentence for searching relevant passages: ", "passage": ""}
    folder = st_folder(
        tiny_bert,
        tmp_path / "m",
        pooling=pooling,
        include_prompt=False,
        normalize=True,
        prompts=prompts,
        default_prompt="query",
    )
    engine = assert_same(folder, texts)  # the default prompt
    assert_same(folder, texts, prompt_name="passage")
    # Pooling the prompt's tokens too gives other vectors: the exclusion is real.
    with_prompt = st_folder(
        tiny_bert,
        tmp_path / "w",
        pooling=pooling,
        normalize=True,
        prompts=prompts,
        default_prompt="query",
    )
    other = Engine.from_pretrained(with_prompt).embed(texts).embeddings
    mine = engine.embed(texts).embeddings
    assert float((other * mine).sum(1).min()) < 0.999


def test_prompts_and_an_eos_appending_post_processor_with_last_token(tiny_bert, tmp_path, texts):
    """A decoder-style tokenizer: no BOS, an EOS appended by the post-processor, an instruction
    prompt from config_sentence_transformers.json, last-token pooling on the EOS."""
    prompts = {"query": "Instruct: Given a web search query, retrieve relevant passages\nQuery:"}
    folder = st_folder(
        tiny_bert, tmp_path / "m", pooling="lasttoken", normalize=True, prompts=prompts
    )
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer["post_processor"] = APPEND_EOS  # embedded texts are single: the pair rule is unused
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    # BertTokenizer would rebuild its own [CLS] … [SEP] template; the generic class keeps the file's.
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    engine = assert_same(folder, texts, prompt_name="query")
    ids = engine.tokenize(["hello world"])[0]
    assert ids[-1] == EOS and ids[0] != 101
    assert_same(folder, texts)


def test_server_batches_keep_the_prompt_out_of_pooling(tiny_bert, tmp_path, texts):
    """Through the HTTP server's batcher, which mixes requests with and without a prompt."""
    import httpx
    from embedserve.server.config import ModelSpec

    from ..server.conftest import live_server, unhurried

    prompts = {"query": "query: ", "passage": ""}
    folder = st_folder(
        tiny_bert,
        tmp_path / "m",
        pooling="mean",
        include_prompt=False,
        normalize=True,
        prompts=prompts,
    )
    want = {name: st_vectors(folder, texts[:12], prompt_name=name)[0] for name in prompts}
    engine = Engine.from_pretrained(folder, name="tiny")
    config = unhurried(models=(ModelSpec("tiny"),))
    with live_server(config, engines={"tiny": engine}) as server, httpx.Client() as client:
        for name in ("query", "passage", "query"):
            reply = client.post(
                f"{server.url}/v1/embeddings",
                timeout=60,
                json={"model": "tiny", "input": texts[:12], "prompt_name": name},
            )
            assert reply.status_code == 200, reply.text
            got = np.asarray([d["embedding"] for d in reply.json()["data"]], dtype=np.float64)
            assert (got * want[name]).sum(1).min() >= COSINE, name


def test_dense_weights_in_torch_legacy_format(tiny_bert, tmp_path, texts):
    """torch.save before 1.6 (and with `_use_new_zipfile_serialization=False`) wrote a bare
    pickle stream, not a zip; older repos' 2_Dense/pytorch_model.bin can be one.
    sentence-transformers reads it with torch; embedserve raised zipfile's "BadZipFile: File is
    not a zip file", naming no file."""
    folder = st_folder(tiny_bert, tmp_path / "m", pooling="cls", dense="identity")
    from safetensors.torch import load_file

    weights = load_file(str(folder / "2_Dense" / "model.safetensors"))
    legacy = folder / "2_Dense" / "pytorch_model.bin"
    torch.save(weights, legacy, _use_new_zipfile_serialization=False)
    (folder / "2_Dense" / "model.safetensors").unlink()
    assert_same(folder, texts)
    legacy.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(ValueError) as caught:
        Engine.from_pretrained(folder)
    assert f"{legacy} is not a torch.save checkpoint" in str(caught.value)


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_a_bert_tokenizer_given_only_as_vocab_txt(
    tiny_bert, tmp_path, texts, minilm_dir, do_lower_case
):
    """Older BERT repos ship vocab.txt, tokenizer_config.json and special_tokens_map.json but no
    tokenizer.json; transformers' BertTokenizer builds its tokenizer from them. embedserve
    refused the folder ("the model needs a tokenizer.json")."""
    from transformers import AutoTokenizer

    from tests.support.edge_texts import EDGE_TEXTS

    folder = st_folder(tiny_bert, tmp_path / "m", pooling="mean", normalize=True)
    (folder / "tokenizer.json").unlink()
    for name in ("vocab.txt", "special_tokens_map.json"):
        shutil.copyfile(minilm_dir / name, folder / name)
    config = json.loads((minilm_dir / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(
        json.dumps({**config, "do_lower_case": do_lower_case})
    )
    odd = [*EDGE_TEXTS, "[CLS] a [SEP] b [MASK] [unk]", "x" * 120]
    engine = assert_same(folder, texts + odd)
    want = AutoTokenizer.from_pretrained(str(folder))(odd)["input_ids"]
    assert engine.tokenize(odd) == want


def _pickled(folder: Path, shards: int, *, zip_format: bool = True) -> None:
    """`folder`'s weights as transformers 4 saved them before safetensors: pytorch_model.bin,
    or `shards` pytorch_model-0000N-of-0000M.bin files and their index."""
    from safetensors.torch import load_file

    weights = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    # Checkpoints of transformers before 4.31 keep the position_ids buffer (int64).
    weights["embeddings.position_ids"] = torch.arange(128).unsqueeze(0)
    if shards == 1:
        torch.save(weights, folder / "pytorch_model.bin", _use_new_zipfile_serialization=zip_format)
        return
    names, weight_map = sorted(weights), {}
    for n in range(shards):
        shard = f"pytorch_model-{n + 1:05d}-of-{shards:05d}.bin"
        torch.save({k: weights[k] for k in names[n::shards]}, folder / shard)
        weight_map.update(dict.fromkeys(names[n::shards], shard))
    (folder / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )


@pytest.mark.parametrize("shards", [1, 2])
def test_weights_only_as_pytorch_model_bin(tiny_bert, tmp_path, texts, shards):
    """Older hub repos ship only pytorch_model.bin (a torch zip), sharded where large;
    sentence-transformers loads them. embedserve refused them ("its pytorch_model.bin is a
    pickle, which embedserve does not read"); it reads them as it reads a Dense head's, without
    torch and without running what the pickle names."""
    from tests.support.edge_texts import EDGE_TEXTS

    folder = st_folder(tiny_bert, tmp_path / "m", pooling="mean", normalize=True)
    _pickled(folder, shards)
    assert_same(folder, texts + EDGE_TEXTS)


def test_a_pytorch_model_bin_in_the_older_torch_format(tiny_bert, tmp_path, texts):
    """2019-2020 repos' pytorch_model.bin is often the pre-1.6 pickle stream."""
    folder = st_folder(tiny_bert, tmp_path / "m", pooling="mean", normalize=True)
    _pickled(folder, 1, zip_format=False)
    assert_same(folder, texts)


def test_torch_checkpoint_reader_reads_bf16_and_integer_storages(tmp_path):
    """bf16 checkpoints (torch_dtype bfloat16) and old checkpoints' int64 position_ids buffer."""
    torch.manual_seed(0)
    saved = {
        "w": torch.randn(3, 5).to(torch.bfloat16),
        "t": torch.randn(4, 6).t(),  # strided: a transposed view
        "position_ids": torch.arange(7).unsqueeze(0),
    }
    for zip_format in (True, False):
        torch.save(saved, tmp_path / "x.bin", _use_new_zipfile_serialization=zip_format)
        read = read_torch_checkpoint(tmp_path / "x.bin")
        np.testing.assert_array_equal(read["w"].astype(np.float32), saved["w"].float().numpy())
        np.testing.assert_array_equal(read["t"], saved["t"].numpy())
        np.testing.assert_array_equal(read["position_ids"], saved["position_ids"].numpy())


def test_a_vocab_txt_tokenizer_takes_its_added_tokens_json(tmp_path, minilm_dir):
    """Repos of that age list tokens added past vocab.txt in added_tokens.json; BertTokenizer
    matches them whole (after lowercasing), so they are one id each, not word pieces."""
    from embedserve.tokenizer_pipeline import load_tokenizer
    from transformers import AutoTokenizer

    for name in ("vocab.txt", "special_tokens_map.json", "tokenizer_config.json", "config.json"):
        shutil.copyfile(minilm_dir / name, tmp_path / name)
    (tmp_path / "added_tokens.json").write_text(json.dumps({"covid19": 30523, "<new>": 30522}))
    mine = load_tokenizer(tmp_path / "tokenizer.json")
    texts = ["a <new> b covid19 COVID19 covid1", "Привет <new>"]
    want = AutoTokenizer.from_pretrained(str(tmp_path))(texts)["input_ids"]
    assert [mine.encode(text).ids for text in texts] == want
    (tmp_path / "added_tokens.json").write_text(json.dumps({"covid19": 30600}))
    with pytest.raises(ValueError, match="added_tokens.json: 'covid19' has id 30600"):
        load_tokenizer(tmp_path / "tokenizer.json")


@pytest.mark.parametrize(
    ("modes", "legacy", "dense"),
    [(["cls", "mean"], True, None), (["mean", "max", "mean_sqrt_len_tokens"], False, "tanh")],
)
def test_several_pooling_modes_are_concatenated(tiny_bert, tmp_path, texts, modes, legacy, dense):
    """A Pooling with several modes (CLS and mean both true in the pre-5.x flags, or a list in
    `pooling_mode`) concatenates their vectors, in sentence-transformers' order; embedserve
    refused the folder ("pooling modes ['cls', 'mean'] are concatenated")."""
    from tests.support.edge_texts import EDGE_TEXTS

    folder = tmp_path / "m"
    models = [st_models.Transformer(str(tiny_bert), max_seq_length=MAX_SEQ)]
    models.append(st_models.Pooling(32, pooling_mode=modes))
    if dense is not None:
        torch.manual_seed(99)
        models.append(st_models.Dense(32 * len(modes), 24, activation_function=torch.nn.Tanh()))
    models.append(st_models.Normalize())
    sentence_transformers.SentenceTransformer(modules=models, device="cpu").save(str(folder))
    if legacy:
        flags = {
            f"pooling_mode_{m}_token" if m == "cls" else f"pooling_mode_{m}_tokens": True
            for m in modes
        }
        config = {"word_embedding_dimension": 32, **flags}
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))
    engine = assert_same(folder, texts + EDGE_TEXTS)
    assert engine.model_info.dimension == (24 if dense else 32 * len(modes))
    assert load_model_config(folder, "m").dimension == engine.model_info.dimension


@pytest.mark.parametrize("normalize", [False, True])
def test_a_saved_truncate_dim_cuts_every_vector(tiny_bert, tmp_path, texts, normalize):
    """sentence-transformers saves `truncate_dim` in config_sentence_transformers.json and, loading
    the folder, cuts every vector to it (and reports it as the dimension). embedserve returned
    the full 32 columns. The cut comes before normalization here, as for `dimensions`, so a
    Normalize model's vectors stay unit length where sentence-transformers' prefixes do not."""
    folder = st_folder(tiny_bert, tmp_path / "m", pooling="mean", normalize=normalize)
    path = folder / "config_sentence_transformers.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "truncate_dim": 16}))
    if not normalize:
        engine = assert_same(folder, texts)
    else:
        want, _ = st_vectors(folder, texts)
        engine = Engine.from_pretrained(folder)
        got = engine.embed(texts).embeddings.astype(np.float64)
        assert got.shape == want.shape
        cos = (got * want).sum(1) / np.linalg.norm(want, axis=1)
        assert cos.min() >= COSINE
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    assert engine.model_info.dimension == 16
    assert engine.embed(texts[:2], dimensions=8).embeddings.shape == (2, 8)
